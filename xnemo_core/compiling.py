"""The denoiser compiled once per model (``torch.compile``, one static graph per call shape),
replayed with CUDA graphs where the weights stay put on a GPU.

The denoiser's forward keeps no state between calls and has no graph break, so one graph serves
every step, window and video of a size; a new size (or a shorter last window) compiles once more.

Compiling the full-size denoiser takes minutes. Modes:

- ``on``: compile at the first call of each shape and wait for it;
- ``auto`` (on CUDA with Triton): a video whose call shapes are not compiled yet runs eager; once
  its denoising ends a background thread compiles those shapes (while the video is decoded and
  the GPU would idle until the next prompt). A video that starts while that compilation is under
  way waits for it, then runs compiled. Compiling while an eager video runs would slow it about
  threefold (the two threads share Python's lock: ``bench/RESULTS.md``);
- ``off``: eager.

Inductor keeps what it compiled on disk (:func:`use_cache_folder`), so a later process compiles
the same shapes much faster.
"""

import importlib.util
import logging
import os
import threading
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .choices import COMPILE_MODES

_STATE = "_xnemo_compiled"
log = logging.getLogger(__name__)


def compile_wanted(mode: str, device: torch.device) -> bool:
    """Whether ``mode`` (``on``, ``off``, ``auto``) compiles on ``device``: ``auto`` does on CUDA
    devices where Triton (inductor's GPU compiler) is installed."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    if mode == "auto":
        return device.type == "cuda" and importlib.util.find_spec("triton") is not None
    return mode == "on"


ONE_VIDEO_PAYBACK_FRAMES = 600
"""Frames from which compiling pays back within one video (``auto`` in a process that animates one,
the command line): compiling took 100–135 s on an H100 and saves about 0.2 s a frame."""


def one_video_mode(mode: str, frames: int, device: torch.device) -> str:
    """The compile mode for a process that animates one video of ``frames`` frames on ``device``:
    ``auto`` compiles first (``on``) only where it would compile at all and the clip is long
    enough to pay the compilation back; a background compilation would end with the process."""
    if mode != "auto":
        return mode
    return "on" if compile_wanted(mode, device) and frames >= ONE_VIDEO_PAYBACK_FRAMES else "off"


def use_cache_folder(folder: str | Path) -> None:
    """Keep inductor's compiled code in ``folder`` (it defaults to a temporary folder that a
    reboot empties), unless ``TORCHINDUCTOR_CACHE_DIR`` names one already."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        Path(folder).mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def call_shape(args: tuple, kwargs: dict) -> tuple:
    """What decides which compiled graph a call runs: every tensor's shape, dtype and device and
    every other argument's value, in the arguments' structure."""
    leaves, structure = tree_flatten((args, kwargs))
    described = tuple(
        (tuple(leaf.shape), leaf.dtype, leaf.device) if isinstance(leaf, torch.Tensor) else repr(leaf)
        for leaf in leaves
    )
    return str(structure), described


class CompiledDenoiser:
    """One model's compiled denoiser (kept on the module, so that every pipeline of the model
    shares it), the call shapes compiled so far, and a background thread that compiles the
    shapes asked for."""

    def __init__(self, denoiser: nn.Module, cuda_graphs: bool):
        mode = "reduce-overhead" if cuda_graphs else "default"
        self.cuda_graphs = cuda_graphs
        self.function = torch.compile(denoiser, fullgraph=True, dynamic=False, mode=mode)
        self.ready: set[tuple] = set()
        self.failed: set[tuple] = set()
        self._queue: dict[tuple, tuple[tuple, dict]] = {}
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    @classmethod
    def of(cls, denoiser: nn.Module, cuda_graphs: bool) -> "CompiledDenoiser":
        """The compiled form of ``denoiser`` (made the first time)."""
        per_module = denoiser.__dict__.get(_STATE)
        if per_module is None:
            # Set past nn.Module's attribute hook: a compiled wrapper is no submodule (no state-dict keys).
            per_module = {}
            object.__setattr__(denoiser, _STATE, per_module)
        if cuda_graphs not in per_module:
            per_module[cuda_graphs] = cls(denoiser, cuda_graphs)
        return per_module[cuda_graphs]

    def compile_later(self, shape: tuple, args: tuple, kwargs: dict) -> None:
        """Compile the call shape ``shape`` by a call with ``args``, ``kwargs``, once :meth:`start` is called."""
        with self._lock:
            if shape not in self.ready and shape not in self.failed:
                self._queue.setdefault(shape, (args, kwargs))

    def start(self) -> None:
        """Compile what :meth:`compile_later` was given, in a background thread."""
        with self._lock:
            if self._queue and (self._worker is None or not self._worker.is_alive()):
                self._worker = threading.Thread(target=self._work, name="xnemo-compile", daemon=True)
                self._worker.start()

    def wait(self) -> None:
        """Block until the background thread has compiled what it was given."""
        while (worker := self._worker) is not None and worker.is_alive():
            worker.join()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._worker = None
                    return
                shape, (args, kwargs) = next(iter(self._queue.items()))
            try:
                with torch.no_grad():
                    self.function(*args, **kwargs)
                done = self.ready
            except Exception as error:  # eager stays in use for this shape; the video is not at risk
                log.warning("X-NeMo: compiling the denoiser failed, it runs eager: %s", error)
                done = self.failed
            with self._lock:
                done.add(shape)
                del self._queue[shape]


class Denoiser:
    """What a pipeline calls in place of the denoiser: compiled code per :func:`compile_wanted`
    and its ``mode``, eager code elsewhere."""

    def __init__(self, denoiser: nn.Module, mode: str, device: torch.device, cuda_graphs: bool):
        self.eager = denoiser
        self.compiled = None
        self.background = False
        if compile_wanted(mode, device):
            self.compiled = CompiledDenoiser.of(denoiser, cuda_graphs)
            self.background = mode == "auto"
        if self.background:
            self.compiled.wait()
        self._usable = set(self.compiled.ready) if self.compiled is not None else set()
        self.compiled_calls = 0
        """Calls that ran compiled code (the others ran eager)."""

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        if not self.background:
            return self._run_compiled(*args, **kwargs)
        shape = call_shape(args, kwargs)
        if shape in self._usable:
            return self._run_compiled(*args, **kwargs)
        self.compiled.compile_later(shape, args, kwargs)
        return self.eager(*args, **kwargs)

    def video_denoised(self) -> None:
        """The video's denoiser calls are over: compile the shapes it ran eager (``auto``)."""
        if self.background:
            self.compiled.start()

    def _run_compiled(self, *args, **kwargs):
        self.compiled_calls += 1
        if self.compiled.cuda_graphs:  # the previous call's output has been consumed: its memory may be reused
            torch.compiler.cudagraph_mark_step_begin()
        return self.compiled.function(*args, **kwargs)


def release_compiled(denoiser: nn.Module) -> None:
    """Forget ``denoiser``'s compiled code and the CUDA graphs recorded from it (their memory
    pool is freed), after any compilation under way ends. Other models' CUDA graphs of this
    thread are recorded again at their next call."""
    per_module: dict[bool, CompiledDenoiser] = denoiser.__dict__.pop(_STATE, {})
    for compiled in per_module.values():
        compiled.wait()
    if any(compiled.cuda_graphs for compiled in per_module.values()):
        from torch._inductor.cudagraph_trees import reset_cudagraph_trees

        reset_cudagraph_trees()

