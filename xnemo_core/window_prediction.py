"""One sampling step's noise prediction: the denoiser run over context windows, averaged per frame.

A step's windows go to the denoiser ``window_batch`` at a time (under classifier-free guidance the
unconditional and conditional rows of each window in the same call), spread over the ranks of a
process group when there is one (:mod:`~xnemo_core.distributed`). Each frame's prediction is the mean
over the windows that hold it, and guidance is applied to that mean, as the official code does.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from einops import rearrange

from . import distributed
from .compiling import Denoiser
from .models.reference import ReferenceBank


@dataclass(frozen=True)
class StepCall:
    """What changes from one sampling step to the next."""

    timestep: torch.Tensor
    guided: bool
    refresh: bool
    """Whether this step runs the whole denoiser (and refreshes the deep feature cache, if any)."""

    @property
    def rows(self) -> int:
        """Rows per window: unconditional and conditional under guidance, else conditional alone."""
        return 2 if self.guided else 1


@dataclass
class WindowPredictor:
    """Predicts each sampling step's noise for every frame of one video with ``denoiser`` on
    ``device``, in ``dtype``."""

    denoiser: Denoiser
    device: torch.device
    dtype: torch.dtype
    reference: ReferenceBank
    clip_embeds: torch.Tensor
    """``(1, 1, D)`` CLIP image embeds of the portrait."""
    motion: torch.Tensor
    """``(F, 32, 16)`` motion tokens of the driving frames, on the device."""
    unconditional_motion: torch.Tensor
    """``(1, 32, 16)`` motion tokens of the portrait's own face: the unconditional rows' motion."""
    window_batch: int
    guidance_scale: float
    cache: "DeepFeatureCache | None" = None
    """Deep features kept for the steps that reuse them (``None``: every step runs whole)."""
    ranks: distributed.Ranks | None = None
    """The process group the denoiser calls are spread over (``None``: this process alone)."""

    def __call__(self, step: StepCall, latents: torch.Tensor, windows: list[list[int]]) -> torch.Tensor:
        """Latents ``(1, 4, F, h, w)`` → the window-averaged noise prediction, guided when ``step.guided``."""
        average = FrameMean(latents.shape[2], axis=2)
        batches = [self._indices(batch) for batch in _batches(windows, self.window_batch)]
        predict = partial(self._predict, step, latents)
        for batch, (prediction, *deep) in distributed.spread(batches, predict, self.ranks, self.device):
            if deep:
                self.cache.add(batch, deep[0], step.rows)
            for row, frames in enumerate(batch):
                average.add(frames, prediction[row :: len(batch)])
        if self.cache is not None and step.refresh:
            self.cache.finish_refresh()
        mean = average.mean()
        if not step.guided:
            return mean
        unconditional, conditional = mean.chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    def _indices(self, windows: list[list[int]]) -> torch.Tensor:
        """Equal-length windows as a ``(W, f)`` frame index on the device, copied from pinned
        memory: a copy from pageable memory would first wait for the GPU to finish its queue."""
        indices = torch.tensor(windows)
        if self.device.type == "cuda":
            indices = indices.pin_memory()
        return indices.to(self.device, non_blocking=True)

    def _predict(self, step: StepCall, latents, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One denoiser call on windows ``(W, f)`` of frames: the prediction, rows ``[uncond…,
        cond…]``, and on steps that refresh the deep feature cache, the deep features."""
        window_latents = rearrange(latents[0][:, windows], "c w f h x -> w c f h x")
        window_motion = self.motion[windows]
        clip = self.clip_embeds.expand(len(windows), -1, -1)
        if step.guided:
            window_latents = torch.cat([window_latents, window_latents])
            unconditional = self.unconditional_motion.expand_as(window_motion)
            window_motion = torch.cat([unconditional, window_motion])
            clip = torch.cat([torch.zeros_like(clip), clip])
        cached = self.cache is not None and not step.refresh
        prediction = self.denoiser(
            window_latents.to(self.dtype),
            step.timestep,
            clip.to(self.dtype),
            window_motion.to(self.dtype),
            self.reference,
            reference_rows=slice(len(windows), None) if step.guided else slice(None),
            deep_features=self.cache.gather(windows, step.rows) if cached else None,
            keep_deep=self.cache is not None and step.refresh,
        )
        return prediction if isinstance(prediction, tuple) else (prediction,)


class FrameMean:
    """The per-frame mean of what several context windows say about each frame: ``add`` values
    whose axis ``axis`` runs over a window's frames, then read the mean (summed in float32)."""

    def __init__(self, num_frames: int, axis: int):
        self.num_frames, self.axis = num_frames, axis
        self._sum: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    def add(self, frames, values: torch.Tensor) -> None:
        values = values.float().movedim(self.axis, 0)
        if self._sum is None:
            self._sum = values.new_zeros((self.num_frames, *values.shape[1:]))
            self._count = values.new_zeros(self.num_frames)
        self._sum[frames] += values
        self._count[frames] += 1

    def mean(self) -> torch.Tensor:
        counts = self._count.view(-1, *[1] * (self._sum.ndim - 1))
        return (self._sum / counts).movedim(0, self.axis)


class DeepFeatureCache:
    """The deep features of the last whole step, per frame, for the steps that skip the deep layers.

    Context windows move between steps (the official schedule shifts them), so features are kept
    per frame and row (unconditional, conditional), averaged over the windows that saw the frame,
    and gathered for whatever windows a later step uses. The cache grows with the clip (at 512²,
    5 MiB a frame and row in fp16), so a refresh drops the old features first and sums the new ones
    in place, in the denoiser's dtype: one buffer of the clip's features at any time.
    """

    def __init__(self, num_frames: int):
        self.num_frames = num_frames
        self.features: torch.Tensor | None = None
        """``(rows, F, C, h, w)`` in the denoiser's dtype; the last row is the conditional one."""
        self._counts: torch.Tensor | None = None
        """Windows that saw each frame, while a refresh sums them."""

    def add(self, windows: torch.Tensor, deep: torch.Tensor, rows: int) -> None:
        """Deep features ``(rows*W*f, C, h, w)`` of one denoiser call on windows ``(W, f)`` of frames."""
        deep = rearrange(deep, "(r w f) c h x -> r w f c h x", r=rows, w=len(windows))
        if self._counts is None:
            self.features = None  # freed before the new buffer is allocated, not after
            self.features = deep.new_zeros((rows, self.num_frames, *deep.shape[3:]))
            self._counts = torch.zeros(self.num_frames, device=deep.device, dtype=deep.dtype)
        for window, features in zip(windows, deep.unbind(1)):
            self.features[:, window] += features
            self._counts[window] += 1

    def finish_refresh(self) -> None:
        self.features /= self._counts.view(1, -1, 1, 1, 1)
        self._counts = None

    def gather(self, windows: torch.Tensor, rows: int) -> torch.Tensor:
        """The features of windows ``(W, f)`` as a denoiser call's ``(rows*W*f, C, h, w)`` input."""
        features = self.features[-rows:, windows]
        return rearrange(features, "r w f c h x -> (r w f) c h x")


def _batches(windows: list[list[int]], size: int) -> Iterator[list[list[int]]]:
    """Consecutive groups of at most ``size`` windows of equal length."""
    group: list[list[int]] = []
    for window in windows:
        if group and (len(group) == size or len(window) != len(group[0])):
            yield group
            group = []
        group.append(window)
    if group:
        yield group
