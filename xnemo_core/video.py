"""Reading portraits and driving clips, writing results (OpenCV; frames are RGB ``uint8``)."""

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
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
    """Frames ``(N, H, W, 3)`` RGB uint8 and frames per second of a video file or image folder."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise MediaError(f"{path}: OpenCV cannot write this image format")
    return path


def write_video(path: str | Path, frames: np.ndarray, fps: float = DEFAULT_FPS) -> Path:
    """Write ``(N, H, W, 3)`` RGB frames (uint8, or float in [0, 1]) as an ``.mp4`` (or ``.avi``,
    ``.mov``, ``.mkv``) file, an animated ``.gif``, or numbered PNG files when ``path`` has no
    such suffix (a folder)."""
    path = Path(path)
    frames = to_uint8(frames)
    if path.suffix.lower() == ".gif":
        return _write_gif(path, frames, fps)
    if path.suffix.lower() not in {".mp4", ".avi", ".mov", ".mkv"}:
        path.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(frames):
            write_image(path / f"frame_{index:05d}.png", frame)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise MediaError(f"{path}: OpenCV cannot write this video format here; try a folder for PNG frames")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def to_uint8(frames: np.ndarray) -> np.ndarray:
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    return path
