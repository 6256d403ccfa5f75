"""X-NeMo's denoising UNet: the image UNet run per frame, plus frame modules at every layer.

Frames are folded into the batch, so every diffusers 2-D layer (convolutions, per-frame
GroupNorm, spatial transformers) runs unchanged: this *is* the official "inflated" UNet. After each
layer of every block (the spatial transformer where the block has one, else the resnet) a motion
module and a temporal module follow, as in the official order resnet → spatial transformer →
motion module → temporal module. The forward walks diffusers' blocks explicitly to put them
there, and passes everything a call needs (motion tokens, reference keys / values, which rows read
the reference) down the call: no state is kept on the modules, so one compiled graph serves every
step, window and video of a size. Parameter names stay exactly those of the official checkpoints
(``down_blocks.0.motion_modules.0....``).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from einops import rearrange
from torch import nn

from .frame_modules import FrameModule, FrameModuleConfig
from .reference import AttentionReference, ReferenceBank, install_reference_processors

_FIXED_FLAGS = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "temporal_module_type": "Vanilla",
    "use_motion_module": True,
    "use_temporal_module": True,
}

SUPPORTED_BLOCKS = {"CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}


@dataclass(frozen=True)
class _Call:
    """What every layer of one denoiser call reads besides its input features."""

    num_frames: int
    motion_tokens: torch.Tensor
    """``(B*F, T, D)``."""
    clip_embeds: torch.Tensor
    """``(B*F, 1, D)``."""
    time: torch.Tensor
    """``(B*F, E)`` time embedding."""
    reference: ReferenceBank | None
    reference_rows: slice
    """Rows of the folded batch that attend to the reference."""

    def transformer_kwargs(self, transformer_name: str) -> dict:
        if self.reference is None:
            return {}
        key, value = self.reference[f"{transformer_name}.transformer_blocks.0.attn1"]
        return {"reference": AttentionReference(key, value, self.reference_rows)}


class DenoisingUNet(UNet2DConditionModel):
    """Video denoiser conditioned on CLIP embeds, motion tokens and reference keys / values.

    Args:
        unet_config: the diffusers ``UNet2DConditionModel`` config of the image base
            (sd-image-variations at full size).
        frame_modules: the official ``unet_additional_kwargs`` (which layers get modules and the
            motion / temporal module settings).
    """

    def __init__(self, unet_config: dict, frame_modules: dict):
        super().__init__(**{k: v for k, v in unet_config.items() if not k.startswith("_")})
        _check_fixed_flags(frame_modules)
        _check_supported(self)
        motion = FrameModuleConfig.from_dict(frame_modules["motion_module_kwargs"])
        temporal = FrameModuleConfig.from_dict(frame_modules["temporal_module_kwargs"])
        resolutions = set(frame_modules.get("motion_module_resolutions", (1, 2, 4, 8)))
        blocks = [(2**i, b) for i, b in enumerate(self.down_blocks)]
        blocks += [(2 ** (len(self.up_blocks) - 1 - i), b) for i, b in enumerate(self.up_blocks)]
        self.use_temporal_modules = True
        """Stage-1 training turns them off: it trains an image model, which has no time axis."""
        for resolution, block in blocks:
            if resolution in resolutions:
                _attach_frame_modules(block, motion, temporal)
        if frame_modules.get("motion_module_mid_block", False):
            _attach_frame_modules(self.mid_block, motion, temporal)
        self._motion_token_dim = motion.cross_attention_dim
        install_reference_processors(self)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        clip_embeds: torch.Tensor,
        motion_tokens: torch.Tensor,
        reference: ReferenceBank | None = None,
        reference_rows: slice = slice(None),
        deep_features: torch.Tensor | None = None,
        keep_deep: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict the noise of a window of frames.

        Args:
            latents: ``(B, 4, F, h, w)`` noisy latents.
            timestep: scalar diffusion timestep, or one per folded row ``(B*F,)``.
            clip_embeds: ``(B, 1, D)`` CLIP image embeds (zeros for the unconditional rows).
            motion_tokens: ``(B, F, 32, 16)`` motion tokens of each frame, or for a spatially
                guided comparison model ``(B, F, C, h', w')`` guider maps, added to the
                ``conv_in`` features (resized to them); the motion modules then read no motion.
            reference: :func:`~xnemo_core.models.reference.project_reference` of the reference
                tokens, or ``None`` for no reference.
            reference_rows: which of the ``B`` rows attend to the reference.
            deep_features: ``(B*F, C, h, w)`` input of the last up block kept from an earlier
                step (``keep_deep``): only the outermost layers run (DeepCache, Ma et al. 2024).
            keep_deep: also return the last up block's input.

        Returns:
            ``(B, 4, F, h, w)`` predicted noise, and with ``keep_deep`` the deep features.
        """
        batch, _, frames = latents.shape[:3]
        if motion_tokens.shape[:2] != (batch, frames):
            raise ValueError(
                f"motion tokens {tuple(motion_tokens.shape)} do not match latents "
                f"{tuple(latents.shape)}: expected ({batch}, {frames}, tokens, channels)"
            )
        sample = rearrange(latents, "b c f h w -> (b f) c h w")
        motion = motion_tokens.flatten(0, 1).to(sample.dtype)
        spatial = None
        if motion.ndim == 4:
            spatial, motion = motion, motion.new_zeros(len(motion), 1, self._motion_token_dim)
        first, last = _row_range(reference_rows, batch)
        call = _Call(
            num_frames=frames,
            motion_tokens=motion,
            clip_embeds=clip_embeds.repeat_interleave(frames, dim=0),
            time=self._time_embedding(sample, timestep),
            reference=reference,
            reference_rows=slice(first * frames, last * frames),
        )
        sample = self.conv_in(sample)
        if spatial is not None:
            sample = sample + F.interpolate(spatial, size=sample.shape[-2:], mode="bilinear")
        if deep_features is None:
            deep, skips = self._deep_path(sample, call)
        else:
            deep, skips = deep_features, self._outer_skips(sample, call)
        sample = self._up_block(self.up_blocks[-1], f"up_blocks.{len(self.up_blocks) - 1}", deep, skips, call, None)
        noise = rearrange(
            self.conv_out(self.conv_act(self.conv_norm_out(sample))), "(b f) c h w -> b c f h w", f=frames
        )
        return (noise, deep) if keep_deep else noise

    def _deep_path(self, sample: torch.Tensor, call: _Call) -> tuple[torch.Tensor, tuple]:
        """Every block but the last up block: its input, and the skip states it consumes."""
        skips = (sample,)
        for index, block in enumerate(self.down_blocks):
            sample, states = self._down_block(block, f"down_blocks.{index}", sample, call)
            skips += states
        sample = self._mid_block(sample, call)
        upsample_size = None
        explicit_size = any(side % 2**self.num_upsamplers for side in skips[0].shape[-2:])
        for index, block in enumerate(self.up_blocks[:-1]):
            states, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            if explicit_size:
                upsample_size = skips[-1].shape[2:]
            sample = self._up_block(block, f"up_blocks.{index}", sample, states, call, upsample_size)
        return sample, skips

    def _outer_skips(self, sample: torch.Tensor, call: _Call) -> tuple:
        """The skip states of the last up block alone: ``conv_in`` and the first down block's layers."""
        skips = (sample,)
        for index in range(len(self.down_blocks[0].resnets)):
            sample = self._layer(self.down_blocks[0], "down_blocks.0", index, sample, call)
            skips += (sample,)
        return skips

    def _time_embedding(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        embedding = self.time_embedding(self.get_time_embed(sample=sample, timestep=timestep))
        return self.time_embed_act(embedding) if self.time_embed_act is not None else embedding

    def _layer(self, block, name: str, index: int, sample: torch.Tensor, call: _Call) -> torch.Tensor:
        """Resnet ``index`` of a block, its spatial transformer if it has one, then its frame modules."""
        sample = block.resnets[index](sample, call.time)
        attentions = getattr(block, "attentions", None)
        if attentions is not None:
            sample = self._transformer(attentions[index], f"{name}.attentions.{index}", sample, call)
        return self._frame_modules(block, index, sample, call)

    def _transformer(self, transformer, name: str, sample: torch.Tensor, call: _Call) -> torch.Tensor:
        return transformer(
            sample,
            encoder_hidden_states=call.clip_embeds,
            cross_attention_kwargs=call.transformer_kwargs(name),
            return_dict=False,
        )[0]

    def _frame_modules(self, block, index: int, sample: torch.Tensor, call: _Call) -> torch.Tensor:
        if not hasattr(block, "motion_modules"):
            return sample
        sample = block.motion_modules[index](sample, call.num_frames, call.motion_tokens)
        if self.use_temporal_modules:
            sample = block.temporal_modules[index](sample, call.num_frames)
        return sample

    def _down_block(self, block, name: str, sample, call: _Call) -> tuple[torch.Tensor, tuple]:
        states = ()
        for index in range(len(block.resnets)):
            sample = self._layer(block, name, index, sample, call)
            states += (sample,)
        for downsampler in block.downsamplers or ():
            sample = downsampler(sample)
            states += (sample,)
        return sample, states

    def _mid_block(self, sample, call: _Call) -> torch.Tensor:
        block = self.mid_block
        sample = block.resnets[0](sample, call.time)
        for index, (attention, resnet) in enumerate(zip(block.attentions, block.resnets[1:])):
            sample = self._transformer(attention, f"mid_block.attentions.{index}", sample, call)
            sample = self._frame_modules(block, index, sample, call)
            sample = resnet(sample, call.time)
        return sample

    def _up_block(self, block, name: str, sample, skips: tuple, call: _Call, upsample_size) -> torch.Tensor:
        for index in range(len(block.resnets)):
            sample = torch.cat([sample, skips[-1 - index]], dim=1)
            sample = self._layer(block, name, index, sample, call)
        for upsampler in block.upsamplers or ():
            sample = upsampler(sample, upsample_size)
        return sample


def _attach_frame_modules(block: nn.Module, motion, temporal) -> None:
    layers = getattr(block, "attentions", None) or block.resnets
    channels = [layer.out_channels for layer in layers]
    block.motion_modules = nn.ModuleList(FrameModule(c, motion) for c in channels)
    block.temporal_modules = nn.ModuleList(FrameModule(c, temporal) for c in channels)


def _row_range(rows: slice, count: int) -> tuple[int, int]:
    """``rows.indices(count)`` for unit steps, in plain arithmetic (which torch.compile traces on
    every PyTorch version)."""
    start, stop = rows.start or 0, count if rows.stop is None else rows.stop
    start, stop = (start + count if start < 0 else start), (stop + count if stop < 0 else stop)
    return min(max(start, 0), count), min(max(stop, 0), count)


def _check_supported(unet: UNet2DConditionModel) -> None:
    """The explicit forward walks SD-style blocks with one transformer block per spatial transformer."""
    config = unet.config
    depth = config.transformer_layers_per_block
    problems = sorted(set(config.down_block_types + config.up_block_types) - SUPPORTED_BLOCKS)
    problems += [] if config.mid_block_type in (None, "UNetMidBlock2DCrossAttn") else [config.mid_block_type]
    problems += [name for name in ("class_embed_type", "addition_embed_type", "encoder_hid_dim") if config.get(name)]
    problems += ["num_class_embeds"] if config.num_class_embeds is not None else []
    problems += [] if depth == 1 or set(depth) == {1} else ["transformer_layers_per_block > 1"]
    if problems:
        raise ValueError(f"unsupported UNet config for the X-NeMo denoiser: {', '.join(map(str, problems))}")


def _check_fixed_flags(frame_modules: dict) -> None:
    for key, expected in _FIXED_FLAGS.items():
        if key in frame_modules and frame_modules[key] != expected:
            raise ValueError(f"unsupported setting {key}={frame_modules[key]!r}; only {expected!r}")
