"""Previews of frames being sampled: what a step's prediction says the clean video is, made visible
without the VAE.

A latent is turned into a rough RGB image by one linear map per pixel (``rgb = latent · factors +
bias``), the way ComfyUI's *latent2rgb* previews work. The official model's latent is Stable
Diffusion's (ComfyUI knows its factors); a model with a VAE of its own (the bundled one) carries
factors fitted by least squares on images through that VAE (:func:`fit_latent_rgb`), in the
``latent_rgb`` metadata of its VAE file, so that a renamed or converted copy keeps them.
"""

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from .layouts import LATENT_RGB as METADATA_KEY


@dataclass(frozen=True)
class LatentRGB:
    """The linear map from a latent pixel to an RGB one in ``[-1, 1]``."""

    factors: tuple[tuple[float, float, float], ...]
    """One ``(r, g, b)`` row per latent channel (ComfyUI's ``latent_rgb_factors``)."""
    bias: tuple[float, float, float]

    def to_rgb(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(..., C, h, w)`` → RGB ``(..., h, w, 3)`` in ``[-1, 1]`` (not clamped)."""
        factors = torch.tensor(self.factors, dtype=latents.dtype, device=latents.device)
        bias = torch.tensor(self.bias, dtype=latents.dtype, device=latents.device)
        return latents.movedim(-3, -1) @ factors + bias

    def as_dict(self) -> dict:
        """What the ``latent_rgb`` metadata holds (as JSON)."""
        return {"factors": [list(row) for row in self.factors], "bias": list(self.bias)}

    @classmethod
    def from_json(cls, text: str, source) -> "LatentRGB":
        try:
            value = json.loads(text)
            factors = tuple(tuple(float(x) for x in row) for row in value["factors"])
            bias = tuple(float(x) for x in value["bias"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{source}: damaged '{METADATA_KEY}' metadata {text[:80]!r}") from None
        if not factors or any(len(row) != 3 for row in factors) or len(bias) != 3:
            raise ValueError(f"{source}: '{METADATA_KEY}' metadata must be C rows of 3 factors and 3 biases")
        return cls(factors, bias)


@torch.no_grad()
def fit_latent_rgb(vae, images: torch.Tensor) -> LatentRGB:
    """Least-squares factors for ``vae``'s latent space from ``images`` ``(N, 3, H, W)`` in
    ``[-1, 1]``: each latent pixel of the scaled means is matched to the image's area mean under it."""
    vae = vae.float()
    latents = vae.encode(images.float()).latent_dist.mean * vae.config.scaling_factor
    targets = F.adaptive_avg_pool2d(images.float(), latents.shape[-2:])
    inputs = rearrange(latents, "n c h w -> (n h w) c")
    inputs = torch.cat([inputs, torch.ones(len(inputs), 1)], dim=1)
    solution = torch.linalg.lstsq(inputs.double(), rearrange(targets, "n c h w -> (n h w) c").double()).solution
    factors = tuple(tuple(round(float(x), 5) for x in row) for row in solution[:-1])
    return LatentRGB(factors, tuple(round(float(x), 5) for x in solution[-1]))


def fit_on_synthetic_faces(vae, count: int = 16, size: int = 128, seed: int = 0) -> LatentRGB:
    """:func:`fit_latent_rgb` on ``count`` faces of the synthetic world (the bundled model's own
    images), the same ones for a given ``seed``."""
    import numpy as np

    from .synthetic import random_identity, random_motion_clip, render

    rng = np.random.default_rng(seed)
    faces = [render(random_identity(rng), random_motion_clip(rng, 1)[0], size) for _ in range(count)]
    images = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return fit_latent_rgb(vae, images)
