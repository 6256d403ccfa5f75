"""Attention building blocks shared by the motion encoder and the denoising UNet's frame modules.

All blocks work on token sequences ``(batch, tokens, channels)``. Which axis the tokens run along
(pixels of one frame, or frames at one pixel) is decided by the caller: the blocks themselves are
layout-agnostic, which lets a temporal module rearrange once instead of once per attention layer.
"""

import math
from functools import partial

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .few_key_attention import few_key_attention, kernel_applies

SHORT_SEQUENCE_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""The backends allowed, on CUDA devices, for attention over a window's frames where the few-key
kernel does not apply: ``bench/attention_sites.py`` measures the memory-efficient kernel at 0.7 of
PyTorch's default (cuDNN) time on these 24-token sequences; math only takes shapes beyond it."""


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """Transformer sin/cos table ``(1, length, dim)``: even channels sin, odd channels cos."""
    position = torch.arange(length).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * frequency)
    table[0, :, 1::2] = torch.cos(position * frequency)
    return table


class FramePositionalEncoding(nn.Module):
    """Adds a fixed sin/cos encoding of the frame index to tokens laid out ``(batch, frames, dim)``.

    The table is a persistent buffer because official checkpoints may carry it; it is never learned.
    """

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim))

    def reset_computed_buffers(self) -> None:
        """Refill the table (after ``to_empty`` materialized a model built on the meta device)."""
        self.pe = sinusoidal_table(self.pe.shape[1], self.pe.shape[2]).to(self.pe.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.pe.shape[1]:
            raise ValueError(
                f"{tokens.shape[1]} frames in one window, but the temporal position encoding "
                f"covers at most {self.pe.shape[1]}: use a shorter context window"
            )
        return tokens + self.pe[:, : tokens.shape[1]].to(tokens.dtype)


def is_plain(attn: Attention) -> bool:
    """Whether ``attn`` is projections and attention alone: no norms of its own, no residual."""
    norms = (attn.spatial_norm, attn.group_norm, getattr(attn, "norm_q", None), getattr(attn, "norm_k", None))
    return all(norm is None for norm in norms) and not attn.norm_cross and not attn.residual_connection


def joint_linear(layers: tuple[nn.Module, ...], tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Bias-free linear layers of the same tokens as one matrix product; the outputs are views of it."""
    if not all(type(layer) is nn.Linear and layer.bias is None for layer in layers):
        return tuple(layer(tokens) for layer in layers)
    joint = F.linear(tokens, torch.cat([layer.weight for layer in layers]))
    return joint.split([layer.out_features for layer in layers], dim=-1)


def attention_projections(attn: Attention, tokens: torch.Tensor, context: torch.Tensor | None = None):
    """Query of ``tokens``, key and value of ``context`` (of ``tokens`` if ``None``): ``(N, L, inner)`` each."""
    if context is None:
        return joint_linear((attn.to_q, attn.to_k, attn.to_v), tokens)
    return (attn.to_q(tokens), *joint_linear((attn.to_k, attn.to_v), context))


class FewKeyAttnProcessor(AttnProcessor2_0):
    """diffusers' processor, with attention over a few keys done by the few-key kernel.

    Where :func:`~.few_key_attention.kernel_applies` (CUDA, half precision, at most 64 keys, enough
    sequences to fill the GPU) the projections run as joint matrix products and the attention as
    one Triton kernel. Elsewhere diffusers' processor runs, on CUDA limited to ``fallback_backends``
    if given.
    """

    def __init__(self, fallback_backends: list[SDPBackend] | None = None):
        super().__init__()
        self.fallback_backends = fallback_backends

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        takes_kernel = (
            hidden_states.ndim == 3
            and attention_mask is None
            and is_plain(attn)
            and kernel_applies(hidden_states, context.shape[1], attn.heads)
        )
        if takes_kernel:
            query, key, value = attention_projections(attn, hidden_states, encoder_hidden_states)
            out = few_key_attention(query, key, value, attn.heads, attn.scale)
            return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor
        call = partial(super().__call__, attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if self.fallback_backends is None or not hidden_states.is_cuda:
            return call()
        with sdpa_kernel(self.fallback_backends):
            return call()


class PositionedAttention(Attention):
    """diffusers ``Attention`` with an optional frame position encoding applied to its input.

    The encoding lives inside the attention module (``<attn>.pos_encoder.pe``) to keep the official
    state-dict layout.
    """

    def __init__(self, *, positional_max_len: int | None = None, **attention_kwargs):
        super().__init__(**attention_kwargs)
        self.pos_encoder = (
            FramePositionalEncoding(attention_kwargs["query_dim"], positional_max_len) if positional_max_len else None
        )

    def forward(self, hidden_states, encoder_hidden_states=None, **kwargs):
        if self.pos_encoder is not None:
            hidden_states = self.pos_encoder(hidden_states)
        return super().forward(hidden_states, encoder_hidden_states=encoder_hidden_states, **kwargs)


class AttentionStack(nn.Module):
    """Pre-norm attention layers followed by a GEGLU feed-forward, each with a residual.

    Args:
        dim: token channels.
        num_heads: attention heads; head size is ``dim // num_heads``.
        num_attentions: how many attention layers precede the feed-forward.
        context_dim: channels of the cross-attention context, or ``None`` for self-attention.
        positional_max_len: if set, each attention adds a sin/cos encoding of the token index
            (used for temporal attention, where tokens are frames).

    Shapes: ``tokens (N, L, dim)``, ``context (N, M, context_dim)`` → ``(N, L, dim)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_attentions: int,
        context_dim: int | None = None,
        positional_max_len: int | None = None,
    ):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            PositionedAttention(
                query_dim=dim,
                cross_attention_dim=context_dim,
                heads=num_heads,
                dim_head=dim // num_heads,
                bias=False,
                positional_max_len=positional_max_len,
            )
            for _ in range(num_attentions)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_attentions))
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            tokens = attention(norm(tokens), encoder_hidden_states=context) + tokens
        return self.ff(self.ff_norm(tokens)) + tokens
