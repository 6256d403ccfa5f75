"""Context windows: which frames the denoiser sees together at each step.

* ``official``: the reference schedule. Windows of ``size`` frames start every
  ``size - overlap`` frames, shifted by ``offset`` and wrapping around the end (closed loop), so
  the first and last frames are blended together.
* ``long``: for speed on long clips. The fewest windows of at most ``size`` frames (the temporal
  position encoding's limit), each as short as covering the clip allows, no wrap-around, spread
  evenly so that neighbours overlap by at least ``overlap`` frames.

Predictions of frames seen by several windows are averaged by the pipeline.
"""

import math


def official_windows(num_frames: int, size: int = 24, overlap: int = 4, offset: int = 0) -> list[list[int]]:
    """The official ``uniform`` schedule (closed loop) for one denoising step."""
    _check(num_frames, size, overlap)
    if num_frames <= size:
        return [list(range(num_frames))]
    return [
        [(frame + offset) % num_frames for frame in range(start, start + size)]
        for start in range(0, num_frames, size - overlap)
    ]


def long_windows(num_frames: int, size: int = 32, overlap: int = 4) -> list[list[int]]:
    """Fewest, then shortest, equal windows of at most ``size`` frames covering the clip in order."""
    _check(num_frames, size, overlap)
    if num_frames <= size:
        return [list(range(num_frames))]
    count = math.ceil((num_frames - overlap) / (size - overlap))
    length = math.ceil((num_frames - overlap) / count) + overlap
    last_start = num_frames - length
    starts = [round(i * last_start / (count - 1)) for i in range(count)]
    return [list(range(start, start + length)) for start in starts]


def _check(num_frames: int, size: int, overlap: int) -> None:
    if num_frames < 1:
        raise ValueError("no frames to animate: the driving motion is empty")
    if not 0 <= overlap < size:
        raise ValueError(f"context overlap {overlap} must be at least 0 and below the window size {size}")
