"""ComfyUI's own ``VAE`` and ``CLIP_VISION`` objects behind the interface the pipeline calls on the
diffusers modules, so ``LoadXNeMo`` can take them from ComfyUI's standard loaders.

ComfyUI runs and places these models itself (its ``encode`` / ``decode`` / ``encode_image`` load
them on demand), so the adapters hold no weights and moving them is a no-op.
"""

from types import SimpleNamespace

import torch

from xnemo_core.checkpoints import CheckpointError
from xnemo_core.config import VAE_SCALING_FACTOR
from xnemo_core.preprocess import clip_denormalize


class ComfyImageEncoder(torch.nn.Module):
    """A ComfyUI ``CLIP_VISION`` as the pipeline's image encoder: ``pixels → .image_embeds``."""

    dtype = torch.float32

    def __init__(self, clip_vision, embed_dim: int):
        super().__init__()
        self.clip_vision, self.embed_dim = clip_vision, embed_dim
        self.config = SimpleNamespace(image_size=getattr(clip_vision, "image_size", 224))
        width = _projection_width(clip_vision)
        if width is not None and width != embed_dim:
            raise CheckpointError(self._mismatch(width))

    def _mismatch(self, width: int) -> str:
        return (
            f"the X-NeMo model and the CLIP vision model disagree: the model expects {self.embed_dim}-wide "
            f"CLIP image embeddings, the CLIP vision model gives {width}-wide ones. X-NeMo's official model "
            "takes the CLIP ViT-L/14 of sd-image-variations (768); leave clip_vision unconnected to use the "
            "model's own image encoder"
        )

    def forward(self, pixels: torch.Tensor) -> SimpleNamespace:
        """``pixels`` ``(B, 3, S, S)`` CLIP-normalized, as the pipeline prepares them."""
        images = clip_denormalize(pixels).clamp(0, 1).permute(0, 2, 3, 1)
        embeds = self.clip_vision.encode_image(images, crop=False)["image_embeds"]
        if embeds.shape[-1] != self.embed_dim:
            raise CheckpointError(self._mismatch(embeds.shape[-1]))
        return SimpleNamespace(image_embeds=embeds.to(pixels.device, torch.float32))


def _projection_width(clip_vision) -> int | None:
    """The image embedding width of a ComfyUI ``ClipVisionModel`` (its ``visual_projection``
    layer), or ``None`` where the object does not tell (then the first encoding is checked)."""
    projection = getattr(getattr(clip_vision, "model", None), "visual_projection", None)
    return getattr(projection, "out_features", None)


class ComfyVAE(torch.nn.Module):
    """A ComfyUI ``VAE`` as the pipeline's VAE (diffusers ``encode`` / ``decode`` results, [-1, 1] pixels).

    ComfyUI's VAE gives raw latents; ``scaling_factor`` is that of the VAE it replaces (the one the
    denoiser was trained with), since the denoiser expects latents scaled as in its training."""

    dtype = torch.float32

    def __init__(self, vae, latent_channels: int, scaling_factor: float = VAE_SCALING_FACTOR):
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=scaling_factor)
        found = getattr(vae, "latent_channels", latent_channels)
        if found != latent_channels:
            raise CheckpointError(
                f"the VAE has {found} latent channels, X-NeMo expects {latent_channels}: "
                "load the Stable Video Diffusion VAE (or another 4-channel SD VAE)"
            )
        self.vae = vae

    def encode(self, pixels: torch.Tensor) -> SimpleNamespace:
        """``pixels`` ``(B, 3, H, W)`` in [-1, 1] → raw (unscaled) latents as ``.latent_dist.mean``."""
        latents = self.vae.encode((pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=latents.to(pixels.device, torch.float32)))

    def decode(self, latents: torch.Tensor, num_frames: int | None = None) -> SimpleNamespace:
        """Raw latents ``(F, C, h, w)`` → ``.sample`` ``(F, 3, H, W)`` in [-1, 1]."""
        images = self.vae.decode(latents)
        pixels = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2) * 2 - 1
        return SimpleNamespace(sample=pixels.to(latents.device, torch.float32))
