"""Reading portraits and driving clips, writing results (OpenCV; frames are RGB ``uint8``)."""

import math
from pathlib import Path

import cv2
import numpy as np

from .files import check_parent_is_folder, replacing, replacing_folder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv"}
OUTPUT_KINDS = "an .mp4 / .avi / .mov / .mkv video, a .gif, or a path without suffix for a folder of PNG frames"
FRAME_PATTERN = "frame_*.png"
DEFAULT_FPS = 25.0


class MediaError(ValueError):
    """An input file that is missing or cannot be decoded; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` RGB uint8."""
    path = _existing(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"{path}: not an image OpenCV can read (expected PNG, JPEG, WebP, ...)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frames(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Frames ``(N, H, W, 3)`` RGB uint8 and frames per second of a video file or image folder
    (the first ``max_frames``, a positive number, when given)."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"the number of driving frames to use must be at least 1, got {max_frames}")
    path = _existing(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_frames]
        if not files:
            raise MediaError(f"{path}: folder has no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        frames = [read_image(file) for file in files]
        if len({f.shape for f in frames}) > 1:
            raise MediaError(f"{path}: frames have different sizes")
        return np.stack(frames), DEFAULT_FPS
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        frames = []
        while capture.isOpened() and (max_frames is None or len(frames) < max_frames):
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise MediaError(f"{path}: no frames could be decoded (not a video OpenCV can read?)")
    return np.stack(frames), float(fps)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write one ``(H, W, 3)`` RGB uint8 image (PNG, JPEG, ... by the suffix)."""
    path = Path(path)
    with replacing(path) as temporary:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise MediaError(f"{path}: OpenCV cannot write this image format")
    return path


def output_kind(path: str | Path) -> str:
    """``"video"``, ``"gif"`` or ``"frames"`` (a folder) for an output path, refusing one that could
    not be written or would mix with other files; call it before any work."""
    path = Path(path)
    suffix = path.suffix.lower()
    kind = "video" if suffix in VIDEO_SUFFIXES else "gif" if suffix == ".gif" else "frames" if not suffix else None
    if kind is None:
        raise MediaError(f"{path}: unknown output type {path.suffix!r}; write {OUTPUT_KINDS}")
    check_parent_is_folder(path)
    if kind != "frames" and path.is_dir():
        raise MediaError(f"{path}: is a folder; give a file name ending in {path.suffix}")
    if kind == "frames" and path.exists():
        if not path.is_dir():
            raise MediaError(f"{path}: is a file; a path without suffix is written as a folder of PNG frames")
        others = sorted(p.name for p in path.iterdir() if not p.match(FRAME_PATTERN))
        if others:
            raise MediaError(
                f"{path}: the folder holds other files than earlier frames ({', '.join(others[:3])}); "
                "choose a new or empty folder"
            )
    return kind


def old_frames(path: str | Path) -> list[Path]:
    """The ``frame_*.png`` files of an earlier run in an output folder (replaced when writing)."""
    path = Path(path)
    return sorted(path.glob(FRAME_PATTERN)) if path.is_dir() else []


def write_video(path: str | Path, frames: np.ndarray, fps: float = DEFAULT_FPS) -> Path:
    """Write ``(N, H, W, 3)`` RGB frames (uint8, or float in [0, 1]) as a video, an animated GIF,
    or numbered PNG files in a folder (see :func:`output_kind`). The result appears only once
    complete; a folder's frames of an earlier run are replaced."""
    path = Path(path)
    kind = output_kind(path)
    check_fps(fps)
    frames = to_uint8(frames)
    if kind == "frames":
        with replacing_folder(path) as folder:
            for index, frame in enumerate(frames):
                write_image(folder / f"frame_{index:05d}.png", frame)
            for old in old_frames(path):
                old.unlink()
        return path
    with replacing(path) as temporary:
        (_write_gif if kind == "gif" else _write_video_file)(temporary, frames, fps)
    return path


def check_fps(fps: float) -> None:
    if isinstance(fps, bool) or not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"frames per second must be a finite number above 0, got {fps!r}")


def _write_video_file(path: Path, frames: np.ndarray, fps: float) -> None:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise MediaError(f"{path}: OpenCV cannot write this video format here; try a folder for PNG frames")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    return path
