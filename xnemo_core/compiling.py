"""The denoiser compiled once per model (``torch.compile``, one static graph), replayed with CUDA
graphs where the weights stay put on a GPU; and the VAE decode, whose eager GroupNorms over whole
512² frames are most of its time.

The denoiser's forward keeps no state between calls and has no graph break, so one graph serves
every step, window and video of a size; a new size (or a shorter last window) compiles once more.
"""

import importlib.util
from collections.abc import Callable

import torch
from torch import nn

COMPILE_MODES = ("auto", "on", "off")
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
    mode = "reduce-overhead" if cuda_graphs else "default"
    return _kept(denoiser, cuda_graphs, lambda: torch.compile(denoiser, fullgraph=True, dynamic=False, mode=mode))


def compiled_decode(vae: nn.Module) -> Callable:
    """``vae.decode`` compiled once for any number of frames and size (dynamic shapes): the last
    decode chunk of a video has whatever length is left, and a static graph per length would
    recompile for every new video length."""
    return _kept(vae, "decode", lambda: torch.compile(vae.decode, fullgraph=True, dynamic=True))


def _kept(module: nn.Module, key, compile: Callable[[], Callable]) -> Callable:
    per_module = module.__dict__.get(_CACHE)
    if per_module is None:
        # Set past nn.Module's attribute hook: a compiled wrapper is no submodule (no state-dict keys),
        # and the cycle it makes with the module is freed with the module.
        per_module = {}
        object.__setattr__(module, _CACHE, per_module)
    if key not in per_module:
        per_module[key] = compile()
    return per_module[key]
