"""TAESD's encoder and decoder as its author (and ComfyUI, comfy/taesd/taesd.py) builds them, with
files in that original form: what the tiny decoder's loader and the download are checked against."""

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


class Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(*(layer for _ in range(2) for layer in (conv(channels), nn.ReLU())), conv(channels))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def conv(channels: int, into: int | None = None, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, into or channels, 3, padding=1, bias=bias, stride=stride)


def original_decoder() -> nn.Sequential:
    """Latents → images in [0, 1]."""
    stage = lambda: (Block(64), Block(64), Block(64), nn.Upsample(scale_factor=2), conv(64, bias=False))  # noqa: E731
    upsampled = [layer for _ in range(3) for layer in stage()]
    return nn.Sequential(Clamp(), conv(4, 64), nn.ReLU(), *upsampled, Block(64), conv(64, 3))


def original_encoder() -> nn.Sequential:
    """Images in [0, 1] → latents."""
    stage = lambda: (conv(64, bias=False, stride=2), Block(64), Block(64), Block(64))  # noqa: E731
    downsampled = [layer for _ in range(3) for layer in stage()]
    return nn.Sequential(conv(3, 64), Block(64), *downsampled, conv(64, 4))


def save_original(module: nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in module.state_dict().items()}, str(path))
    return path


def write_taesd_files(folder: Path, seed: int = 0) -> tuple[nn.Sequential, nn.Sequential]:
    """``taesd_encoder.safetensors`` and ``taesd_decoder.safetensors`` in ``folder``, as published."""
    torch.manual_seed(seed)
    encoder, decoder = original_encoder(), original_decoder()
    save_original(encoder, folder / "taesd_encoder.safetensors")
    save_original(decoder, folder / "taesd_decoder.safetensors")
    return encoder, decoder
