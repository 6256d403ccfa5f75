"""Reading portraits and driving clips, writing results; frames are RGB ``uint8``.

Images go through OpenCV, videos through PyAV (FFmpeg; ComfyUI's own video library), which writes
H.264 in ``yuv420p`` (what browsers play) and can keep the driving clip's sound.
"""

import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .files import check_output_path, check_parent_is_folder, replacing, replacing_folder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv"}
OUTPUT_KINDS = "an .mp4 / .avi / .mov / .mkv video, a .gif, or a path without suffix for a folder of PNG frames"
FRAME_PATTERN = "frame_*.png"
DEFAULT_FPS = 25.0
MAX_FPS = 1000.0
OPENCV_PIXEL_LIMIT = 1 << 30
BACKGROUND = 255
"""What transparent parts of a portrait become: white."""
TRANSPARENCY_NOTE = "the reference image has transparent parts; they were filled with white"


class MediaError(ValueError):
    """An input file that is missing or cannot be decoded; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` RGB uint8 (transparent parts filled with white)."""
    return read_portrait(path)[0]


def read_portrait(path: str | Path) -> tuple[np.ndarray, str | None]:
    """``(H, W, 3)`` RGB uint8, and a note when transparent parts were filled with white."""
    path = _existing(path)
    image = _imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"{path}: not an image OpenCV can read (expected PNG, JPEG, WebP, ...)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    whole = _imread(path, cv2.IMREAD_UNCHANGED)
    if whole is None or whole.ndim != 3 or whole.shape[2] != 4:
        return image, None
    alpha = whole[..., 3:].astype(np.float32) / np.iinfo(whole.dtype).max
    if alpha.min() == 1:
        return image, None
    return to_uint8(flatten_alpha(image.astype(np.float32) / 255, alpha)), TRANSPARENCY_NOTE


def _imread(path: Path, flags: int) -> np.ndarray | None:
    try:
        return cv2.imread(str(path), flags)
    except cv2.error as error:
        if "MAX_IMAGE_PIXELS" in str(error):
            limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_PIXEL_LIMIT))
            reason = f"its header claims more pixels than OpenCV reads ({limit}, OPENCV_IO_MAX_IMAGE_PIXELS)"
        else:
            reason = f"OpenCV cannot decode it ({str(error).strip().splitlines()[-1]})"
        raise MediaError(f"{path}: {reason}; give a smaller or re-saved image") from None


def flatten_alpha(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Float ``rgb`` in [0, 1] composited over the white :data:`BACKGROUND` by ``alpha`` ``(..., 1)``."""
    return rgb * alpha + (BACKGROUND / 255) * (1 - alpha)


def read_frames(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Frames ``(N, H, W, 3)`` RGB uint8 and frames per second of a video file or image folder
    (the first ``max_frames``, a positive number, when given)."""
    import av  # here, not at the top: the models and the pipeline load without FFmpeg

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
    frames, fps = [], DEFAULT_FPS
    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                stream = container.streams.video[0]
                fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
                for frame in container.decode(stream):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) == max_frames:
                        break
    except (av.FFmpegError, OSError, ValueError):
        frames = []
    if not frames:
        raise MediaError(f"{path}: no frames could be decoded (not a video FFmpeg can read?)")
    return np.stack(frames), fps


def has_sound(path: str | Path) -> bool:
    """Whether a video file has an audio stream."""
    import av  # here, not at the top: the models and the pipeline load without FFmpeg

    try:
        with av.open(str(_existing(path))) as container:
            return bool(container.streams.audio)
    except (av.FFmpegError, OSError):
        return False


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


def check_output(path: str | Path, inputs=(), untouchable=()) -> str:
    """:func:`output_kind`, and :func:`~xnemo_core.files.check_output_path`: not an input, not in an
    ``untouchable`` folder, and creatable; call it before any work."""
    kind = output_kind(path)
    check_output_path(path, inputs, untouchable, folder=kind == "frames")
    return kind


def old_frames(path: str | Path) -> list[Path]:
    """The ``frame_*.png`` files of an earlier run in an output folder (replaced when writing)."""
    path = Path(path)
    return sorted(path.glob(FRAME_PATTERN)) if path.is_dir() else []


def write_video(
    path: str | Path, frames: np.ndarray, fps: float = DEFAULT_FPS, audio_from: str | Path | None = None
) -> Path:
    """Write ``(N, H, W, 3)`` RGB frames (uint8, or float in [0, 1]) as a video, an animated GIF,
    or numbered PNG files in a folder (see :func:`output_kind`). The result appears only once
    complete; a folder's frames of an earlier run are replaced. ``audio_from``: a video whose sound
    the video keeps (as long as the frames last)."""
    path = Path(path)
    kind = output_kind(path)
    check_fps(fps)
    if audio_from is not None and kind != "video":
        raise MediaError(f"{path}: only a video file can keep the sound of {audio_from}")
    frames = to_uint8(frames)
    if kind == "frames":
        with replacing_folder(path) as folder:
            for index, frame in enumerate(frames):
                write_image(folder / f"frame_{index:05d}.png", frame)
            for old in old_frames(path):
                old.unlink()
        return path
    with replacing(path) as temporary:
        if kind == "gif":
            _write_gif(temporary, frames, fps)
        else:
            _write_video_file(temporary, frames, fps, audio_from)
    return path


def check_fps(fps: float) -> None:
    is_number = isinstance(fps, (int, float)) and not isinstance(fps, bool)
    if not (is_number and 0 < fps <= MAX_FPS):  # NaN fails both comparisons; a huge int never overflows here
        raise ValueError(f"frames per second must be a number above 0 and at most {MAX_FPS:g}, got {fps!r:.40}")


def _write_video_file(path: Path, frames: np.ndarray, fps: float, audio_from: Path | None) -> None:
    """H.264 (``yuv420p``, so odd sides are padded by one edge pixel), and AAC sound from ``audio_from``."""
    import av  # here, not at the top: the models and the pipeline load without FFmpeg

    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("h264", rate=Fraction(fps).limit_denominator(1001))
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "17"}
        source = av.open(str(audio_from)) if audio_from is not None else None
        try:
            if source is not None and not source.streams.audio:
                raise MediaError(f"{audio_from}: has no sound to keep")
            sound = source.streams.audio[0] if source is not None else None
            audio = container.add_stream("aac", rate=sound.rate) if sound else None
            for frame in frames:
                container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(video.encode())
            if audio:
                _copy_sound(container, source, sound, audio, duration=len(frames) / fps)
        finally:
            if source is not None:
                source.close()


def _copy_sound(container, source, sound, audio, duration: float) -> None:
    for frame in source.decode(sound):
        if frame.time is not None and frame.time >= duration:
            break
        frame.pts = None
        container.mux(audio.encode(frame))
    container.mux(audio.encode())


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
