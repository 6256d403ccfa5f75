"""Training clips: the synthetic face world, or folders of real face videos (mp4 or frame folders).

Every item is a clip ``frames`` ``(F, 3, S, S)`` in [-1, 1]; synthetic items also carry their
identity vector and per-frame motion, which evaluation uses as ground truth.
"""

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..synthetic import random_identity, random_motion_clip, render_clip
from ..video import read_frames

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm"}


def single_threaded_worker(worker_id: int) -> None:
    """``DataLoader`` workers render and decode with one thread each (OpenCV and torch would
    otherwise each start a pool per worker and starve the training process)."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 → ``(F, 3, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def frame_positions(rng: np.random.Generator, frames: int, span: int | None) -> np.ndarray:
    """Sorted positions of a clip's ``frames`` frames: consecutive, or drawn at random (distinct)
    from ``span`` consecutive source frames, so that a clip's frames can differ widely in pose."""
    if span is None or span <= frames:
        return np.arange(frames)
    return np.sort(rng.choice(span, frames, replace=False))


class SyntheticFaces(Dataset):
    """Clip ``i`` is identity ``i`` performing its own random motion; fully determined by ``seed``.

    Training and held-out sets are disjoint when their seeds differ (identities and motions are
    drawn from separate random streams per item). With ``span``, the ``frames`` frames are taken
    at random moments of a ``span``-frame performance instead of consecutively.
    """

    def __init__(self, length: int, frames: int = 8, size: int = 64, seed: int = 0, span: int | None = None):
        self.length, self.frames, self.size, self.seed, self.span = length, frames, size, seed, span

    def __len__(self) -> int:
        return self.length

    def identity(self, index: int):
        return random_identity(np.random.default_rng([self.seed, index, 0]))

    def motion(self, index: int) -> np.ndarray:
        positions = frame_positions(np.random.default_rng([self.seed, index, 2]), self.frames, self.span)
        return random_motion_clip(np.random.default_rng([self.seed, index, 1]), positions[-1] + 1)[positions]

    def __getitem__(self, index: int) -> dict:
        identity, motion = self.identity(index), self.motion(index)
        return {
            "frames": to_tensor(render_clip(identity, motion, self.size)),
            "identity": torch.from_numpy(identity.vector()),
            "motion": torch.from_numpy(motion),
        }


class FaceVideoFolder(Dataset):
    """Every video file or frame folder under ``root``, as clips of ``frames`` frames resized to
    ``size`` (inputs should already be face crops): consecutive, or with ``span``, at random
    moments of a ``span``-frame stretch (shorter when the video is)."""

    def __init__(self, root: str | Path, frames: int = 8, size: int = 64, span: int | None = None):
        root = Path(root)
        self.sources = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES or (p.is_dir() and any(p.glob("*.png")))
        )
        if not self.sources:
            raise FileNotFoundError(f"{root}: no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) or PNG frame folders")
        self.frames, self.size, self.span = frames, size, span

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        frames, _ = read_frames(self.sources[index])
        if len(frames) < self.frames:
            raise ValueError(f"{self.sources[index]}: {len(frames)} frames, clips need {self.frames}")
        stretch = min(len(frames), self.span or self.frames)
        start = int(torch.randint(0, len(frames) - stretch + 1, ()))
        rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
        chosen = start + frame_positions(rng, self.frames, stretch)
        resized = [cv2.resize(frames[i], (self.size, self.size), interpolation=cv2.INTER_AREA) for i in chosen]
        return {"frames": to_tensor(np.stack(resized))}


def clips(config) -> Dataset:
    """The clips a training config names: ``config.data`` is ``synthetic`` or a video folder
    (fields ``data``, ``synthetic_clips``, ``clip_frames``, ``size``, ``seed``, optional ``clip_span``)."""
    span = getattr(config, "clip_span", None)
    if config.data == "synthetic":
        return SyntheticFaces(config.synthetic_clips, config.clip_frames, config.size, seed=config.seed, span=span)
    return FaceVideoFolder(config.data, config.clip_frames, config.size, span=span)


def training_loader(config) -> DataLoader:
    """Shuffled full batches of :func:`clips`, rendered or decoded by single-threaded workers."""
    return DataLoader(
        clips(config),
        config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        worker_init_fn=single_threaded_worker,
    )
