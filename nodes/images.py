"""ComfyUI ``IMAGE`` tensors ``(B, H, W, C)`` float in [0, 1] ↔ uint8 arrays for the core."""

import numpy as np
import torch

from xnemo_core.video import to_uint8


def to_frames(images: torch.Tensor, what: str) -> np.ndarray:
    if images is None or images.dim() != 4 or images.shape[0] == 0:
        shape = None if images is None else tuple(images.shape)
        raise ValueError(f"{what}: expected a non-empty IMAGE batch (frames, height, width, 3), got {shape}")
    return to_uint8(images[..., :3].float().cpu().numpy())


def to_images(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames)
    return frames.float().contiguous()
