"""How a run fits a GPU: whether the model stays on it, and whether compiling in the background
has room beside an eager run.

Figures measured at 512² in fp16 (``bench/RESULTS.md``, "ComfyUI on a GPU"), scaled by the
number of latent pixels a denoiser call sees and by the dtype's size.
"""

from dataclasses import dataclass

import torch
from torch import nn

from .decoding import SLICE_BYTES_PER_PIXEL, STREAM_BYTES_PER_PIXEL

DENOISE_BYTES_PER_LATENT = 10_000
"""Eager denoiser activations per latent pixel of a call's frames and rows, per byte of dtype
(3.5 GiB for a guided 24-frame window at 512² in fp16)."""
HEADROOM = int(0.8 * 2**30)
"""Kept free for the CUDA context's growth, cuDNN workspaces and the allocator's fragments."""


def module_bytes(*modules: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))


def denoise_bytes(frames_per_call: int, rows: int, height: int, width: int, itemsize: int) -> int:
    """Eager activations of one denoiser call on ``frames_per_call`` frames of ``rows`` rows."""
    return DENOISE_BYTES_PER_LATENT * frames_per_call * rows * (height // 8) * (width // 8) * itemsize


def smallest_decode_bytes(chunk: int, height: int, width: int, itemsize: int) -> int:
    """A decode in slices of one frame (:mod:`~xnemo_core.decoding`)."""
    return (chunk * STREAM_BYTES_PER_PIXEL + SLICE_BYTES_PER_PIXEL) * height * width * itemsize


def deep_cache_bytes(settings, frames: int, deep_channels: int, itemsize: int) -> int:
    """The deep features a run that reuses them keeps through its denoising: every frame's, for
    the guided rows (:class:`~xnemo_core.window_prediction.DeepFeatureCache`); 0 without reuse."""
    if settings.deep_cache_interval == 1:
        return 0
    return _rows(settings) * frames * deep_channels * (settings.height // 8) * (settings.width // 8) * itemsize


def working_bytes(settings, config, frames: int, itemsize: int) -> int:
    """The GPU memory of a run's largest stage beside the model: a denoiser call with the deep
    features kept for reuse, or the decode in its smallest slices, for
    :class:`~xnemo_core.settings.AnimationSettings` ``settings`` of a model of
    :class:`~xnemo_core.config.XNeMoConfig` ``config`` on a clip of ``frames`` frames."""
    window = settings.window_length(config.max_window) * settings.window_batch
    denoise = denoise_bytes(window, _rows(settings), settings.height, settings.width, itemsize)
    deep_channels = config.unet["block_out_channels"][1]  # the last up block's input, at the second level's width
    return max(
        denoise + deep_cache_bytes(settings, frames, deep_channels, itemsize),
        smallest_decode_bytes(settings.decode_chunk, settings.height, settings.width, itemsize),
    )


def _rows(settings) -> int:
    """Rows of a window in the largest denoiser call: unconditional and conditional under guidance."""
    return 2 if settings.guidance_scale > 1 else 1


@dataclass(frozen=True)
class Fit:
    offload: bool
    """Keep the modules on the CPU, each visiting the GPU while it runs."""
    compile: str
    """The compile mode to run with: ``auto`` only where a compiling run has room beside the eager one."""


def fit(model_bytes: int, total_bytes: int, working: int, low_vram: bool, compile: str) -> Fit:
    """How a run of a model of ``model_bytes`` whose largest stage needs ``working`` bytes goes on
    a GPU that can give ``total_bytes``: resident where it fits (unless ``low_vram``), ``auto``
    compiling turned off where a second run has no room."""
    resident = model_bytes + working + HEADROOM
    if compile == "auto" and resident + working > total_bytes:
        compile = "off"
    return Fit(low_vram or resident > total_bytes, compile)


def usable_gpu_memory(device: torch.device) -> int:
    """Bytes a CUDA ``device`` can hold for this process (its capacity, as the driver reports it)."""
    return torch.cuda.mem_get_info(device)[1]
