"""Spatial motion guidance: the pose-guider alternative X-NeMo argues against.

Instead of 1-D motion tokens read through cross-attention, the driving frame itself is encoded
into a feature map that is added to the denoiser's first features (as Animate Anyone's pose guider
does with pose images). It is here only to reproduce the paper's comparison in miniature: a
spatial map keeps the driver's face shape, which then leaks into the result.
"""

import torch
from torch import nn


class SpatialMotionGuider(nn.Module):
    """Driving frame ``(N, 3, S, S)`` in [-1, 1] → features ``(N, out_channels, S/8, S/8)``.

    Args:
        face_size: the side the driving frames are resized to.
        channels: widths of the three stride-2 stages.
        out_channels: the denoiser's first block width (its ``conv_in`` output).
    """

    def __init__(self, face_size: int = 128, channels: tuple[int, ...] = (16, 32, 64), out_channels: int = 320):
        super().__init__()
        self.face_size = face_size
        layers, width = [], 3
        for stage in channels:
            layers += [nn.Conv2d(width, stage, 3, padding=1), nn.SiLU(), nn.Conv2d(stage, stage, 3, 2, 1), nn.SiLU()]
            width = stage
        self.stages = nn.Sequential(*layers)
        # Zero output: training starts from the unguided denoiser.
        self.to_features = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.to_features.weight)
        nn.init.zeros_(self.to_features.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.to_features.weight.dtype

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.to_features(self.stages(frames))
