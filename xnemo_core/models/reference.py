"""Reference attention: how the portrait's appearance reaches the denoiser.

The reference UNet (a plain diffusers ``UNet2DConditionModel``) runs once per video on the clean
reference latents. :func:`capture_reference` records, for every spatial transformer layer, the
normalized tokens entering its self-attention (``attn1``). In the denoising UNet the same-named
``attn1`` layers carry a :class:`ReferenceAttnProcessor`, which lets the chosen batch rows attend
over ``[own tokens ‖ reference tokens]`` while the other rows (the unconditional half under
classifier-free guidance) do plain self-attention.

Both sides swap attention processors (diffusers' mechanism for changing attention behaviour)
instead of replacing module ``forward`` methods.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

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
def capture_reference(
    reference_unet: nn.Module, latents: torch.Tensor, clip_embeds: torch.Tensor
) -> ReferenceTokens:
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


@dataclass
class ReferenceState:
    """What the denoiser's reference processors read during one forward call.

    ``rows`` selects the batch rows (before frames are folded in) that attend to the reference.
    """

    tokens: ReferenceTokens = field(default_factory=dict)
    rows: slice = field(default_factory=lambda: slice(None))
    num_frames: int = 1


class ReferenceAttnProcessor(AttnProcessor2_0):
    """``attn1`` processor of the denoising UNet; plain self-attention when no tokens are set."""

    def __init__(self, name: str, state: ReferenceState):
        super().__init__()
        self.name, self.state = name, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        reference = self.state.tokens.get(self.name)
        if reference is None:
            return super().__call__(attn, hidden_states, attention_mask=attention_mask)
        frames = self.state.num_frames
        start, stop, _ = self.state.rows.indices(hidden_states.shape[0] // frames)
        start, stop = start * frames, stop * frames
        attending = hidden_states[start:stop]
        reference = reference.to(attending.dtype)
        if reference.shape[0] == 1:
            reference = reference.expand(attending.shape[0], -1, -1)
        else:
            reference = reference.repeat_interleave(frames, dim=0)
        context = torch.cat([attending, reference], dim=1)
        parts = [super().__call__(attn, attending, encoder_hidden_states=context)]
        if start > 0:
            parts.insert(0, super().__call__(attn, hidden_states[:start]))
        if stop < hidden_states.shape[0]:
            parts.append(super().__call__(attn, hidden_states[stop:]))
        return torch.cat(parts, dim=0)


def install_reference_processors(unet: nn.Module, state: ReferenceState) -> None:
    for name, layer in self_attention_layers(unet).items():
        layer.set_processor(ReferenceAttnProcessor(name, state))


@contextmanager
def reading(state: ReferenceState, tokens: ReferenceTokens | None, rows: slice, num_frames: int):
    """Point the processors at ``tokens`` for the duration of one forward call."""
    state.tokens, state.rows, state.num_frames = tokens or {}, rows, num_frames
    try:
        yield
    finally:
        state.tokens, state.rows, state.num_frames = {}, slice(None), 1
