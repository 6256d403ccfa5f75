"""The denoiser compiled once per model (``torch.compile``, one static graph), replayed with CUDA
graphs where the weights stay put on a GPU.

The denoiser's forward keeps no state between calls and has no graph break, so one graph serves
every step, window and video of a size; a new size (or a shorter last window) compiles once more.
"""

import importlib.util

import torch
from torch import nn

from .choices import COMPILE_MODES

_CACHE = "_xnemo_compiled"


def compile_wanted(mode: str, device: torch.device) -> bool:
    """``on``, ``off``, or ``auto``: on for CUDA devices where Triton (inductor's GPU compiler) is installed."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    if mode == "auto":
        return device.type == "cuda" and importlib.util.find_spec("triton") is not None
    return mode == "on"


def compiled(denoiser: nn.Module, cuda_graphs: bool) -> nn.Module:
    """``denoiser`` compiled fullgraph with static shapes, kept with the module so that every
    pipeline of the same model reuses the compiled code. ``cuda_graphs`` replays each call as a
    CUDA graph (needs the weights to stay on one device between calls)."""
    per_module = denoiser.__dict__.get(_CACHE)
    if per_module is None:
        # Set past nn.Module's attribute hook: a compiled wrapper is no submodule (no state-dict keys),
        # and the cycle it makes with the module is freed with the module.
        per_module = {}
        object.__setattr__(denoiser, _CACHE, per_module)
    if cuda_graphs not in per_module:
        mode = "reduce-overhead" if cuda_graphs else "default"
        per_module[cuda_graphs] = torch.compile(denoiser, fullgraph=True, dynamic=False, mode=mode)
    return per_module[cuda_graphs]
