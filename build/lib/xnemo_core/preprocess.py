"""Pixels to network inputs, with the official recipe's resampling (it matters for parity).

Images enter as ``uint8`` arrays ``(H, W, 3)`` RGB (or batches ``(N, H, W, 3)``).

* VAE and motion encoder: PIL Lanczos resize, then ``[-1, 1]`` (diffusers' ``VaeImageProcessor``).
* CLIP: PIL ``resize((224, 224))`` with its default bicubic filter, then CLIP's mean / std. At
  224×224 the CLIP processor's own resize and centre crop are identities, so they are skipped.
"""

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

MOTION_INPUT_SIZE = 224
START_BLUR_KERNEL = 9
START_BLUR_SIGMA = 18.0

_vae_processor = VaeImageProcessor(do_resize=True, do_normalize=True, resample="lanczos")


def to_pil(image: np.ndarray) -> Image.Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return Image.fromarray(image)


def vae_input(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    """``(1, 3, height, width)`` in ``[-1, 1]``."""
    return _vae_processor.preprocess(to_pil(image), height=height, width=width)


def motion_input(faces: np.ndarray, size: int = MOTION_INPUT_SIZE) -> torch.Tensor:
    """Face crops ``(N, h, w, 3)`` → ``(N, 3, size, size)`` in ``[-1, 1]`` (224 officially)."""
    return torch.cat([vae_input(face, size, size) for face in faces])


def clip_input(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """``(1, 3, size, size)`` normalized for the CLIP image encoder."""
    resized = np.asarray(to_pil(image).resize((size, size)), dtype=np.float32) / 255.0
    return clip_normalize(torch.from_numpy(resized).permute(2, 0, 1)[None])


def _clip_statistics(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return mean, std


def clip_normalize(pixels: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in [0, 1] → CLIP's mean / std normalization."""
    mean, std = _clip_statistics(pixels)
    return (pixels - mean) / std


def clip_denormalize(pixels: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`clip_normalize`."""
    mean, std = _clip_statistics(pixels)
    return pixels * std + mean


def gaussian_blur(images: torch.Tensor, kernel_size: int = START_BLUR_KERNEL, sigma: float = START_BLUR_SIGMA):
    """Gaussian blur of ``(N, C, H, W)`` with reflect padding, as torchvision's ``GaussianBlur``."""
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float32, device=images.device)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    weights = (weights / weights.sum()).to(images.dtype)
    channels = images.shape[1]
    kernel = (weights[:, None] * weights[None, :]).expand(channels, 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernel, groups=channels)
