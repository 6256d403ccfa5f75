"""ComfyUI ``IMAGE`` tensors ``(B, H, W, C)`` float in [0, 1] ↔ uint8 arrays for the core."""

import logging

import numpy as np
import torch

from xnemo_core.video import flatten_alpha, to_uint8

CHANNELS = (1, 3, 4)
"""Grey, RGB and RGBA images, as ComfyUI's nodes make them."""


def to_frames(images: torch.Tensor, what: str) -> np.ndarray:
    """``(B, H, W, 3)`` RGB uint8; grey is repeated, transparent parts are filled with white (and said)."""
    if images is None or images.dim() != 4 or images.shape[0] == 0 or images.shape[-1] not in CHANNELS:
        shape = None if images is None else tuple(images.shape)
        raise ValueError(
            f"{what}: expected a non-empty IMAGE batch (frames, height, width, 1, 3 or 4 channels), got {shape}"
        )
    pixels = images.float().cpu().numpy()
    if not np.isfinite(pixels).all():
        raise ValueError(f"{what}: the IMAGE holds NaN or infinite pixels; check the node that made it")
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    elif pixels.shape[-1] == 4:
        alpha = np.clip(pixels[..., 3:], 0, 1)
        if alpha.min() < 1:
            logging.warning("X-NeMo: %s has transparent parts; they were filled with white", what)
        pixels = flatten_alpha(pixels[..., :3], alpha)
    return to_uint8(pixels)


def to_images(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames)
    return frames.float().contiguous()
