"""Reference attention: how the portrait's appearance reaches the denoiser.

The reference UNet (a plain diffusers ``UNet2DConditionModel``) runs once per video on the clean
reference latents. :func:`capture_reference` records, for every spatial transformer layer, the
normalized tokens entering its self-attention (``attn1``). In the denoising UNet the same-named
``attn1`` layers carry a :class:`ReferenceAttnProcessor`, which lets the chosen batch rows attend
over ``[own tokens ‖ reference tokens]`` while the other rows (the unconditional half under
classifier-free guidance) do plain self-attention. The reference tokens are projected to keys and
values once per video (:func:`project_reference`); the caller owns that bank and passes it with
every denoiser call, so no state stays on the modules between calls.

Both sides swap attention processors (diffusers' mechanism for changing attention behaviour)
instead of replacing module ``forward`` methods.
"""

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from einops import rearrange
from torch import nn

from .attention_blocks import attention_projections, is_plain

ReferenceTokens = dict[str, torch.Tensor]
"""Self-attention input of each reference layer, by ``attn1`` module name: ``(R, L, C)``."""


class ReferenceUNet(UNet2DConditionModel):
    """The image UNet without its output head, as in the official reference network.

    Only its self-attention inputs are used, so the official checkpoint has no ``conv_norm_out``
    or ``conv_out``; this class drops them too (its forward output is the last feature map).
    """

    def __init__(self, **unet_config):
        super().__init__(**{k: v for k, v in unet_config.items() if not k.startswith("_")})
        self.conv_norm_out = self.conv_act = None
        self.conv_out = nn.Identity()


def self_attention_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """The ``attn1`` module of every spatial transformer block, by qualified name."""
    return {
        name: module
        for name, module in unet.named_modules()
        if name.endswith(".attn1") and ".transformer_blocks." in name
    }


class _CaptureProcessor(AttnProcessor2_0):
    def __init__(self, name: str, store: ReferenceTokens):
        super().__init__()
        self.name, self.store = name, store

    def __call__(self, attn, hidden_states, *args, **kwargs):
        # The official pipeline keeps the bank in float16 whatever the run's precision; parity
        # with its numbers needs the same rounding.
        self.store[self.name] = hidden_states.to(torch.float16)
        return super().__call__(attn, hidden_states, *args, **kwargs)


@torch.no_grad()
def capture_reference(reference_unet: nn.Module, latents: torch.Tensor, clip_embeds: torch.Tensor) -> ReferenceTokens:
    """Run the reference UNet at timestep 0 and return its self-attention inputs.

    Args:
        reference_unet: diffusers ``UNet2DConditionModel``.
        latents: clean reference latents ``(R, 4, h, w)`` (already scaled by the VAE factor).
        clip_embeds: CLIP image embeds ``(R, 1, D)``.
    """
    store: ReferenceTokens = {}
    layers = self_attention_layers(reference_unet)
    originals = {name: layer.processor for name, layer in layers.items()}
    try:
        for name, layer in layers.items():
            layer.set_processor(_CaptureProcessor(name, store))
        timestep = torch.zeros((), device=latents.device)
        reference_unet(latents, timestep, encoder_hidden_states=clip_embeds, return_dict=False)
    finally:
        for name, layer in layers.items():
            layer.set_processor(originals[name])
    return store


ReferenceBank = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Reference keys and values of each denoiser ``attn1`` layer, by module name: ``(R, L, C)`` each.
Projected once per video (:func:`project_reference`) and passed to every denoiser call."""


def project_reference(denoiser: nn.Module, tokens: ReferenceTokens) -> ReferenceBank:
    """The denoiser's key and value projections of the captured reference tokens."""
    bank = {}
    for name, layer_tokens in tokens.items():
        attn = denoiser.get_submodule(name)
        layer_tokens = layer_tokens.to(attn.to_k.weight.dtype)
        bank[name] = (attn.to_k(layer_tokens), attn.to_v(layer_tokens))
    return bank


class AttentionReference(NamedTuple):
    """What one ``attn1`` layer reads of the reference in one call: its keys and values, and which
    rows of the (frames-folded) batch attend to them."""

    key: torch.Tensor
    value: torch.Tensor
    rows: slice


class ReferenceAttnProcessor:
    """``attn1`` processor of the denoising UNet.

    The rows ``reference.rows`` attend over ``[own tokens ‖ reference tokens]``; the other rows,
    and every row when ``reference`` is ``None``, do plain self-attention. It holds no state: what
    it reads comes with each call (``cross_attention_kwargs``).
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, reference=None):
        query, key, value = attention_projections(attn, hidden_states)
        if reference is None:
            out = _attend(attn, query, key, value)
        else:
            rows = reference.rows
            parts = []
            if rows.start > 0:
                parts.append(_attend(attn, query[: rows.start], key[: rows.start], value[: rows.start]))
            parts.append(_attend(attn, query[rows], *_with_reference(key[rows], value[rows], reference)))
            if rows.stop < hidden_states.shape[0]:
                parts.append(_attend(attn, query[rows.stop :], key[rows.stop :], value[rows.stop :]))
            out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return attn.to_out[1](attn.to_out[0](out))


class CrossAttnProcessor(AttnProcessor2_0):
    """diffusers' ``attn2`` processor, which also receives (and ignores) the call's reference.

    Over a context of one token (the CLIP embed) the softmax weight is exactly 1, so every query's
    output is that token's value: the output is projected once per row and broadcast over the
    queries, with no query projection and no attention kernel. The numbers are the same.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, reference=None):
        if _one_plain_key(attn, hidden_states, encoder_hidden_states, attention_mask):
            value = attn.to_out[1](attn.to_out[0](attn.to_v(encoder_hidden_states)))
            return (value / attn.rescale_output_factor).expand(-1, hidden_states.shape[1], -1)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask)


def _one_plain_key(attn, hidden_states, context, attention_mask) -> bool:
    """Whether this cross-attention reads a single context token, with nothing that would use the
    queries or keys (mask, norms, residual)."""
    return (
        context is not None
        and context.shape[1] == 1
        and attention_mask is None
        and hidden_states.ndim == 3
        and is_plain(attn)
    )


def _with_reference(key, value, reference: AttentionReference):
    """Append the reference keys / values (one per batch row, shared by its frames) to each frame's."""
    count = key.shape[0]
    ref_key, ref_value = reference.key, reference.value
    if ref_key.shape[0] == 1:
        ref_key, ref_value = ref_key.expand(count, -1, -1), ref_value.expand(count, -1, -1)
    else:
        frames = count // ref_key.shape[0]
        ref_key, ref_value = ref_key.repeat_interleave(frames, dim=0), ref_value.repeat_interleave(frames, dim=0)
    return torch.cat([key, ref_key.to(key.dtype)], dim=1), torch.cat([value, ref_value.to(value.dtype)], dim=1)


def _attend(attn, query, key, value):
    """Multi-head scaled dot-product attention of ``(N, L, C)`` projections → ``(N, L, C)``."""
    split = partial(rearrange, pattern="n l (h d) -> n h l d", h=attn.heads)
    out = F.scaled_dot_product_attention(split(query), split(key), split(value), scale=attn.scale)
    return rearrange(out, "n h l d -> n l (h d)")


def install_reference_processors(unet: nn.Module) -> None:
    """Stateless processors on every spatial transformer of the denoiser: reference-reading
    ``attn1``, and ``attn2`` that accepts the same call arguments."""
    for name, layer in self_attention_layers(unet).items():
        layer.set_processor(ReferenceAttnProcessor())
        unet.get_submodule(name.removesuffix("attn1") + "attn2").set_processor(CrossAttnProcessor())
