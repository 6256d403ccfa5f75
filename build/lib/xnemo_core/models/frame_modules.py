"""The two per-layer additions that turn the image UNet into X-NeMo's video denoiser.

* motion modules (``Spatial_Cross``): each frame's pixels cross-attend to that frame's 32 motion
  tokens. This is the only path by which the driving face reaches the denoiser.
* temporal modules (``Temporal_Self``): each pixel self-attends across the frames of the window
  (AnimateDiff style), with a sin/cos frame position encoding.

Both are a :class:`FrameModule`; the config decides which.

Both read and write feature maps with frames folded into the batch, ``(B*F, C, H, W)``.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .attention_blocks import SHORT_SEQUENCE_BACKENDS, AttentionStack, FewKeyAttnProcessor


@dataclass(frozen=True)
class FrameModuleConfig:
    """One entry of the official ``motion_module_kwargs`` / ``temporal_module_kwargs``."""

    attention_block_types: tuple[str, ...]
    num_attention_heads: int = 8
    num_transformer_block: int = 1
    cross_attention_dim: int | None = None
    temporal_position_encoding: bool = False
    temporal_position_encoding_max_len: int = 32
    temporal_attention_dim_div: int = 1

    @classmethod
    def from_dict(cls, kwargs: dict) -> "FrameModuleConfig":
        known = {k: v for k, v in kwargs.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"unsupported frame-module settings: {unknown}")
        known["attention_block_types"] = tuple(known["attention_block_types"])
        config = cls(**known)
        kinds = set(config.attention_block_types)
        if kinds not in ({"Spatial_Cross"}, {"Temporal_Self"}):
            raise ValueError(
                "a frame module must be all 'Spatial_Cross' (motion) or all 'Temporal_Self' "
                f"(temporal) attention, got {list(config.attention_block_types)}"
            )
        return config

    @property
    def is_temporal(self) -> bool:
        return self.attention_block_types[0] == "Temporal_Self"


class FrameTransformer(nn.Module):
    """GroupNorm → linear in → attention stacks → linear out, added to the input.

    Shapes: ``features (B*F, C, H, W)``; ``motion_tokens (B*F, T, D)`` for motion modules.
    """

    def __init__(self, channels: int, config: FrameModuleConfig):
        super().__init__()
        heads = config.num_attention_heads
        inner_dim = heads * (channels // heads // config.temporal_attention_dim_div)
        self.is_temporal = config.is_temporal
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            AttentionStack(
                inner_dim,
                heads,
                num_attentions=len(config.attention_block_types),
                context_dim=None if config.is_temporal else config.cross_attention_dim,
                positional_max_len=(
                    config.temporal_position_encoding_max_len
                    if config.is_temporal and config.temporal_position_encoding
                    else None
                ),
            )
            for _ in range(config.num_transformer_block)
        )
        # A window's frames, or a frame's motion tokens: few keys either way.
        fallback_backends = SHORT_SEQUENCE_BACKENDS if config.is_temporal else None
        for block in self.transformer_blocks:
            for attention in block.attention_blocks:
                attention.set_processor(FewKeyAttnProcessor(fallback_backends))
        self.proj_out = nn.Linear(inner_dim, channels)
        nn.init.zeros_(self.proj_out.weight)  # a new module starts as the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self, features: torch.Tensor, num_frames: int, motion_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        _, _, height, width = features.shape
        tokens = rearrange(self.norm(features), "n c h w -> n (h w) c")
        tokens = self.proj_in(tokens)
        if self.is_temporal:
            tokens = rearrange(tokens, "(b f) d c -> (b d) f c", f=num_frames)
        for block in self.transformer_blocks:
            tokens = block(tokens, context=motion_tokens)
        if self.is_temporal:
            tokens = rearrange(tokens, "(b d) f c -> (b f) d c", d=height * width)
        tokens = self.proj_out(tokens)
        # Contiguous output keeps the following GroupNorms on the same kernel as the official code.
        return rearrange(tokens, "n (h w) c -> n c h w", h=height).contiguous() + features


class FrameModule(nn.Module):
    """A motion or temporal module at one UNet layer.

    The wrapper exists only so that parameters sit under ``temporal_transformer.`` as in the
    official checkpoints (for both kinds of module).
    """

    def __init__(self, channels: int, config: FrameModuleConfig):
        super().__init__()
        self.temporal_transformer = FrameTransformer(channels, config)

    def forward(self, features, num_frames, motion_tokens=None):
        return self.temporal_transformer(features, num_frames, motion_tokens)
