"""Spatial and colour augmentation of the driving input: the motion encoder sees a face whose
position, proportions and colours differ from the target's, so identity cues that survive
augmentation are the only shortcut left, and the latent learns motion instead. Widths and heights
scale independently (face proportions are identity) and hues turn freely (skin, hair and eye
colours are identity). There is no rotation: a tilted head is motion (roll), which the latent
must carry."""

import math

import torch
import torch.nn.functional as F


def augment_driving(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    max_shift: float = 0.06,
    max_scale: float = 0.15,
    colour: float = 0.3,
    max_hue: float = math.pi,
    grayscale_p: float = 0.2,
) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] → the same shape, each image warped and recoloured on its own."""
    return _recolour(_shift_and_scale(images, generator, max_shift, max_scale), generator, colour, max_hue, grayscale_p)


def _uniform(n: int, bound: float, generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1).mul(bound).to(device)


def _shift_and_scale(images, generator, max_shift, max_scale) -> torch.Tensor:
    n, device = len(images), images.device
    zoom_x, zoom_y = (1 / (1 + _uniform(n, max_scale, generator, device)) for _ in range(2))
    shift = torch.stack([_uniform(n, 2 * max_shift, generator, device) for _ in range(2)], dim=1)
    zero = torch.zeros_like(zoom_x)
    theta = torch.stack([torch.stack([zoom_x, zero, shift[:, 0]], 1), torch.stack([zero, zoom_y, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _recolour(images, generator, strength, max_hue, grayscale_p) -> torch.Tensor:
    n, device = len(images), images.device
    pixels = images / 2 + 0.5
    gray = pixels.mean(dim=1, keepdim=True)
    saturation = (1 + _uniform(n, strength, generator, device)).view(n, 1, 1, 1)
    pixels = gray + (pixels - gray) * saturation
    hue = _uniform(n, max_hue, generator, device)
    pixels = torch.einsum("nij,njhw->nihw", _hue_rotation(hue).to(pixels.dtype), pixels)
    contrast = (1 + _uniform(n, strength, generator, device)).view(n, 1, 1, 1)
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = mean + (pixels - mean) * contrast
    pixels = pixels + _uniform(n, strength / 2, generator, device).view(n, 1, 1, 1)
    to_gray = (torch.rand(n, generator=generator) < grayscale_p).to(device).view(n, 1, 1, 1)
    pixels = torch.where(to_gray, pixels.mean(dim=1, keepdim=True).expand_as(pixels), pixels)
    return (pixels.clamp(0, 1) - 0.5) * 2


def _hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rotations of RGB about the grey axis."""
    axis = torch.full((3,), 1 / math.sqrt(3), device=angle.device)
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float32, device=angle.device) / math.sqrt(3)
    outer = torch.outer(axis, axis)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    return cos * torch.eye(3, device=angle.device) + sin * cross + (1 - cos) * outer
