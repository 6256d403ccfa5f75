"""X-NeMo's denoising UNet: the image UNet run per frame, plus frame modules at every layer.

Frames are folded into the batch, so every diffusers 2-D layer (convolutions, per-frame
GroupNorm, spatial transformers) runs unchanged: this *is* the official "inflated" UNet. After each
layer of every block (the spatial transformer where the block has one, else the resnet) a motion
module and a temporal module follow, as in the official order resnet → spatial transformer →
motion module → temporal module. They are attached with forward hooks so that diffusers'
``UNet2DConditionModel.forward`` drives the whole network and the parameter names stay exactly
those of the official checkpoints (``down_blocks.0.motion_modules.0....``).
"""

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from einops import rearrange
from torch import nn

from .frame_modules import FrameModule, FrameModuleConfig
from .reference import ReferenceState, ReferenceTokens, install_reference_processors, reading

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


@dataclass
class _FrameContext:
    num_frames: int
    motion_tokens: torch.Tensor
    spatial_motion: torch.Tensor | None = None


class DenoisingUNet(UNet2DConditionModel):
    """Video denoiser conditioned on CLIP embeds, motion tokens and reference tokens.

    Args:
        unet_config: the diffusers ``UNet2DConditionModel`` config of the image base
            (sd-image-variations at full size).
        frame_modules: the official ``unet_additional_kwargs`` (which layers get modules and the
            motion / temporal module settings).
    """

    def __init__(self, unet_config: dict, frame_modules: dict):
        super().__init__(**{k: v for k, v in unet_config.items() if not k.startswith("_")})
        _check_fixed_flags(frame_modules)
        motion = FrameModuleConfig.from_dict(frame_modules["motion_module_kwargs"])
        temporal = FrameModuleConfig.from_dict(frame_modules["temporal_module_kwargs"])
        resolutions = set(frame_modules.get("motion_module_resolutions", (1, 2, 4, 8)))
        blocks = [(2**i, b) for i, b in enumerate(self.down_blocks)]
        blocks += [(2 ** (len(self.up_blocks) - 1 - i), b) for i, b in enumerate(self.up_blocks)]
        self._frame_context: _FrameContext | None = None
        self.use_temporal_modules = True
        """Stage-1 training turns them off: it trains an image model, which has no time axis."""
        for resolution, block in blocks:
            if resolution in resolutions:
                self._attach_frame_modules(block, motion, temporal)
        if frame_modules.get("motion_module_mid_block", False):
            self._attach_frame_modules(self.mid_block, motion, temporal)
        self._motion_token_dim = motion.cross_attention_dim
        self.conv_in.register_forward_hook(self._add_spatial_motion)
        self._reference = ReferenceState()
        install_reference_processors(self, self._reference)

    def _add_spatial_motion(self, layer, args, output):
        spatial = self._frame_context.spatial_motion if self._frame_context else None
        if spatial is None:
            return output
        if spatial.shape[-2:] != output.shape[-2:]:
            spatial = F.interpolate(spatial, size=output.shape[-2:], mode="bilinear")
        return output + spatial

    def _attach_frame_modules(self, block: nn.Module, motion, temporal) -> None:
        layers = getattr(block, "attentions", None) or block.resnets
        channels = [layer.out_channels for layer in layers]
        block.motion_modules = nn.ModuleList(FrameModule(c, motion) for c in channels)
        block.temporal_modules = nn.ModuleList(FrameModule(c, temporal) for c in channels)
        for layer, motion_module, temporal_module in zip(layers, block.motion_modules, block.temporal_modules):
            layer.register_forward_hook(
                partial(self._after_layer, motion_module=motion_module, temporal_module=temporal_module)
            )

    def _after_layer(self, layer, args, output, *, motion_module, temporal_module):
        context = self._frame_context
        if context is None:
            raise RuntimeError("DenoisingUNet layers must be called through DenoisingUNet.forward")
        features = output[0] if isinstance(output, tuple) else output
        features = motion_module(features, context.num_frames, context.motion_tokens)
        if self.use_temporal_modules:
            features = temporal_module(features, context.num_frames)
        return (features, *output[1:]) if isinstance(output, tuple) else features

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float | int,
        clip_embeds: torch.Tensor,
        motion_tokens: torch.Tensor,
        reference_tokens: ReferenceTokens | None = None,
        reference_rows: slice = slice(None),
    ) -> torch.Tensor:
        """Predict the noise of a window of frames.

        Args:
            latents: ``(B, 4, F, h, w)`` noisy latents.
            timestep: scalar diffusion timestep.
            clip_embeds: ``(B, 1, D)`` CLIP image embeds (zeros for the unconditional rows).
            motion_tokens: ``(B, F, 32, 16)`` motion tokens of each frame, or for a spatially
                guided comparison model ``(B, F, C, h', w')`` guider maps, added to the
                ``conv_in`` features (resized to them); the motion modules then read no motion.
            reference_tokens: output of :func:`capture_reference`, or ``None`` for no reference.
            reference_rows: which of the ``B`` rows attend to the reference tokens.

        Returns:
            ``(B, 4, F, h, w)`` predicted noise.
        """
        batch, _, frames = latents.shape[:3]
        if motion_tokens.shape[:2] != (batch, frames):
            raise ValueError(
                f"motion tokens {tuple(motion_tokens.shape)} do not match latents "
                f"{tuple(latents.shape)}: expected ({batch}, {frames}, tokens, channels)"
            )
        folded = rearrange(latents, "b c f h w -> (b f) c h w")
        motion = motion_tokens.flatten(0, 1).to(folded.dtype)
        if motion.ndim == 4:
            no_tokens = motion.new_zeros(len(motion), 1, self._motion_token_dim)
            self._frame_context = _FrameContext(frames, no_tokens, spatial_motion=motion)
        else:
            self._frame_context = _FrameContext(frames, motion)
        try:
            with reading(self._reference, reference_tokens, reference_rows, frames):
                noise = super().forward(
                    folded,
                    timestep,
                    encoder_hidden_states=clip_embeds.repeat_interleave(frames, dim=0),
                    return_dict=False,
                )[0]
        finally:
            self._frame_context = None
        return rearrange(noise, "(b f) c h w -> b c f h w", f=frames)

    def forget_reference(self) -> None:
        """Free the reference keys / values cached for the last video."""
        self._reference.forget()


def _check_fixed_flags(frame_modules: dict) -> None:
    for key, expected in _FIXED_FLAGS.items():
        if key in frame_modules and frame_modules[key] != expected:
            raise ValueError(f"unsupported setting {key}={frame_modules[key]!r}; only {expected!r}")
