"""Face boxes and the crops X-NeMo needs, following the official recipe.

* Reference: a wide, aspect-preserving crop around the face (the portrait the VAE and CLIP see) and
  a tight square crop ×1.1 (the face whose motion tokens are the unconditional condition).
* Driving video: one fixed square box size (the first frame's face ×1.1), box centres smoothed
  over time (Gaussian, sigma 5 frames), each crop resized to 224×224 for the motion encoder.

Detectors run offline: OpenCV's bundled Haar cascade by default, OpenCV's YuNet with a ``.onnx``
model file, or MediaPipe BlazeFace (the official detector) with a ``.tflite`` model file when the
``mediapipe`` package is installed. Boxes are ``(left, top, right, bottom)`` floats in pixels.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .choices import CROP_MODES
from .preprocess import MOTION_INPUT_SIZE

DETECTION_MAX_SIDE = 640
FACE_SCALE = 1.1
PORTRAIT_MARGIN = 0.5
CENTRE_SMOOTHING_SIGMA = 5.0


def detector_for(mode: str, model_path: str | Path | None = None) -> "FaceDetector | None":
    """The detector a crop mode needs: one for ``detect``, ``None`` (inputs are face crops) for ``none``."""
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {', '.join(CROP_MODES)}")
    return FaceDetector(model_path) if mode == "detect" else None


class FaceNotFoundError(ValueError):
    pass


class FaceDetector:
    """Largest face of an RGB ``uint8`` frame, or ``None``.

    Args:
        model_path: ``None`` for OpenCV's Haar cascade, a ``.onnx`` YuNet model or a ``.tflite``
            MediaPipe BlazeFace model.
    """

    def __init__(self, model_path: str | Path | None = None):
        self.model_path = Path(model_path) if model_path else None
        if self.model_path is None:
            self._detect = _haar_detector()
        elif not self.model_path.is_file():
            raise FileNotFoundError(f"face detector model not found: {self.model_path}")
        elif self.model_path.suffix == ".onnx":
            self._detect = _yunet_detector(self.model_path)
        elif self.model_path.suffix == ".tflite":
            self._detect = _mediapipe_detector(self.model_path)
        else:
            raise ValueError(f"{self.model_path}: expected a YuNet .onnx or a BlazeFace .tflite model")

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        boxes = self.all_faces(frame)
        if not len(boxes):
            return None
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[int(np.argmax(areas))]

    def all_faces(self, frame: np.ndarray) -> np.ndarray:
        """Every face's box ``(N, 4)``, left to right."""
        scale = min(1.0, DETECTION_MAX_SIDE / max(frame.shape[:2]))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        boxes = np.clip(np.asarray(self._detect(np.ascontiguousarray(small)), dtype=np.float64).reshape(-1, 4), 0, None)
        boxes = boxes / scale
        return boxes[np.argsort(boxes[:, 0], kind="stable")]


def _haar_detector():
    data = getattr(cv2, "data", None)
    cascade_file = Path(data.haarcascades if data else "") / "haarcascade_frontalface_default.xml"
    if not cascade_file.is_file() or not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no bundled face cascade (OpenCV 5 dropped it): install "
            "'opencv-python<5', or pass a YuNet .onnx / BlazeFace .tflite face detector model"
        )
    cascade = cv2.CascadeClassifier(str(cascade_file))

    def detect(frame):
        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        return [(x, y, x + w, y + h) for x, y, w, h in found]

    return detect


def _yunet_detector(model_path: Path):
    try:
        detector = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320))
    except cv2.error:
        raise ValueError(f"{model_path}: OpenCV cannot read it as a YuNet face detector (.onnx) model") from None

    def detect(frame):
        detector.setInputSize((frame.shape[1], frame.shape[0]))
        _, faces = detector.detect(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        return [] if faces is None else [(x, y, x + w, y + h) for x, y, w, h in faces[:, :4]]

    return detect


def _mediapipe_detector(model_path: Path):
    try:
        import mediapipe as mp
    except ImportError as error:
        raise ImportError(f"{model_path} is a BlazeFace model but the 'mediapipe' package is not installed") from error
    options = mp.tasks.vision.FaceDetectorOptions(base_options=mp.tasks.BaseOptions(model_asset_path=str(model_path)))
    detector = mp.tasks.vision.FaceDetector.create_from_options(options)

    def detect(frame):
        result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame))
        boxes = [d.bounding_box for d in result.detections]
        return [(b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height) for b in boxes]

    return detect


@dataclass
class ReferenceCrops:
    portrait: np.ndarray
    """Wide crop around the face, what the VAE and CLIP see (``uint8``, zero-padded at borders)."""
    face: np.ndarray
    """Tight square face crop, resized to 224×224."""
    portrait_box: tuple[int, int, int, int]
    """Where ``portrait`` lies in the image (may reach outside it where padded)."""
    note: str | None = None
    """What was done to the image that its owner should hear (a non-square face crop cut square)."""


@dataclass
class DrivingCrops:
    faces: np.ndarray
    """``(N, 224, 224, 3)`` uint8 face crops."""
    boxes: np.ndarray
    """``(N, 4)`` crop boxes in the frames."""
    undetected: list[int]
    """Frames whose face was not found (their box comes from the nearest frames that had one)."""

    @property
    def note(self) -> str | None:
        """What the video's owner should hear (frames without a face), or ``None``."""
        if not self.undetected:
            return None
        return f"no face in {len(self.undetected)} driving frames; neighbouring boxes reused"


def reference_crops(image: np.ndarray, detector: FaceDetector | None, label: str = "reference image") -> ReferenceCrops:
    """Crops of the portrait; ``detector=None`` means the image is already a face crop (a
    non-square one is cut to its centre square rather than stretched, and ``note`` says so)."""
    if detector is None:
        return _centre_square(image, label)
    box = detector(image)
    if box is None:
        raise FaceNotFoundError(f"no face found in the {label}; use a clear frontal portrait or crop mode 'none'")
    left, top, right, bottom = (int(v) for v in scale_box(box, FACE_SCALE, image.shape))
    face = resize_square(image[top:bottom, left:right])
    portrait_box = widened_box(box, PORTRAIT_MARGIN, image.shape)
    return ReferenceCrops(crop_with_padding(image, portrait_box), face, portrait_box)


def _centre_square(image: np.ndarray, label: str) -> ReferenceCrops:
    height, width = image.shape[:2]
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    square = image[top : top + side, left : left + side]
    note = None
    if height != width:
        note = (
            f"the {label} is {width}×{height}, not square: its centre {side}×{side} is animated "
            "(the rest is kept as it is in the pasted-back frames); crop it yourself to choose another part"
        )
    return ReferenceCrops(square, resize_square(square), (left, top, left + side, top + side), note)


def driving_crops(frames: np.ndarray, detector: FaceDetector | None, face_index: int | None = None) -> DrivingCrops:
    """Face crops of every frame; ``detector=None`` means the frames are already face crops.

    ``face_index``: ``None`` follows the largest face of each frame; ``k`` the ``k``-th face from
    the left (0 first) of the first frame that shows that many, then in every frame the face
    nearest to where it was."""
    if len(frames) == 0:
        raise ValueError("no driving frames")
    height, width = frames.shape[1:3]
    if detector is None:
        boxes = np.tile([0.0, 0.0, width, height], (len(frames), 1))
        return DrivingCrops(np.stack([resize_square(f) for f in frames]), boxes, [])
    if face_index is None:
        detected = [detector(frame) for frame in frames]
    else:
        detected = _followed_face([detector.all_faces(frame) for frame in frames], face_index)
    undetected = [i for i, box in enumerate(detected) if box is None]
    if len(undetected) == len(frames):
        raise FaceNotFoundError(f"no face found in any of the {len(frames)} driving frames")
    if undetected:
        warnings.warn(
            f"no face found in {len(undetected)} of {len(frames)} driving frames "
            f"(first: {undetected[0]}); reusing the neighbouring frames' boxes",
            stacklevel=2,
        )
    boxes = fill_missing(detected)
    first = scale_box(boxes[0], FACE_SCALE, frames.shape[1:])
    size = (round(first[2] - first[0]) // 2 * 2, round(first[3] - first[1]) // 2 * 2)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    centres[0] = (first[:2] + first[2:]) / 2
    centres = gaussian_smooth(centres, CENTRE_SMOOTHING_SIGMA)
    crop_boxes = np.stack([box_at(centre, size, frames.shape[1:]) for centre in centres])
    faces = [resize_square(f[int(t) : int(b), int(l) : int(r)]) for f, (l, t, r, b) in zip(frames, crop_boxes)]
    return DrivingCrops(np.stack(faces), crop_boxes, undetected)


def _followed_face(faces: list[np.ndarray], index: int) -> list[np.ndarray | None]:
    """Per frame, the box of face ``index`` (from the left where it first appears), then followed:
    the face nearest to its last box, if it lies within one box size of it (else ``None``: lost)."""
    if index < 0:
        raise ValueError(f"face index must be 0 or more (0 = the first face from the left), got {index}")
    start = next((i for i, boxes in enumerate(faces) if len(boxes) > index), None)
    if start is None:
        most = max(len(boxes) for boxes in faces)
        if most == 0:
            raise FaceNotFoundError(f"no face found in any of the {len(faces)} driving frames")
        raise FaceNotFoundError(
            f"face index {index} needs a frame with at least {index + 1} faces, but no driving frame "
            f"shows more than {most}; use an index below {most}"
        )
    chosen: list[np.ndarray | None] = [None] * len(faces)
    chosen[start] = last = faces[start][index]
    for i in range(start + 1, len(faces)):
        if len(faces[i]):
            centres = (faces[i][:, :2] + faces[i][:, 2:]) / 2
            distances = np.linalg.norm(centres - (last[:2] + last[2:]) / 2, axis=1)
            if distances.min() <= max(last[2:] - last[:2]):
                chosen[i] = last = faces[i][np.argmin(distances)]
    return chosen


def fill_missing(boxes: list[np.ndarray | None]) -> np.ndarray:
    """Missing boxes take the nearest detected box (the earlier one on ties)."""
    found = [i for i, box in enumerate(boxes) if box is not None]
    nearest = [min(found, key=lambda j: (abs(j - i), j)) for i in range(len(boxes))]
    return np.stack([boxes[j] for j in nearest]).astype(np.float64)


def scale_box(box: np.ndarray, scale: float, shape: tuple) -> np.ndarray:
    """Square of side ``scale × max(w, h)`` on the same centre; the box itself if that leaves the frame."""
    left, top, right, bottom = box[:4]
    side = max(right - left, bottom - top) * scale
    cx, cy = (left + right) / 2, (top + bottom) / 2
    square = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    inside = square[0] >= 0 and square[1] >= 0 and square[2] <= shape[1] - 1 and square[3] <= shape[0] - 1
    return square if inside else np.asarray(box[:4], dtype=np.float64)


def box_at(centre: np.ndarray, size: tuple[int, int], shape: tuple) -> np.ndarray:
    """Box of ``size`` (w, h) around ``centre``, shifted back inside the frame where it can be."""
    width, height = size
    box = np.array([centre[0] - width / 2, centre[1] - height / 2, centre[0] + width / 2, centre[1] + height / 2])
    dx = max(-box[0], 0) + min(shape[1] - 1 - box[2], 0)
    dy = max(-box[1], 0) + min(shape[0] - 1 - box[3], 0)
    return box + np.array([dx, dy, dx, dy])


def widened_box(box: np.ndarray, margin: float, shape: tuple) -> tuple[int, int, int, int]:
    """Grow the box by ``margin`` per side (more on the short side, to make it square) and shift it
    inside the image along each axis where it fits; what still sticks out is padded by the caller."""
    left, top, right, bottom = box[:4]
    width, height = right - left, bottom - top
    grow_w = max(margin, ((1 + 2 * margin) * height - width) / (2 * width))
    grow_h = max(margin, ((1 + 2 * margin) * width - height) / (2 * height))
    left, right = int(left - grow_w * width), int(right + grow_w * width)
    top, bottom = int(top - grow_h * height), int(bottom + grow_h * height)
    left, right = _shift_inside(left, right, shape[1])
    top, bottom = _shift_inside(top, bottom, shape[0])
    return left, top, right, bottom


def _shift_inside(low: int, high: int, limit: int) -> tuple[int, int]:
    if high - low > limit:
        return low, high
    if low < 0:
        return 0, high - low
    if high > limit:
        return low - (high - limit), limit
    return low, high


def crop_with_padding(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image[top:bottom, left:right]`` with black where the box leaves the image."""
    left, top, right, bottom = box
    pad = max(0, -left, -top, right - image.shape[1], bottom - image.shape[0])
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0))) if pad else image
    return padded[top + pad : bottom + pad, left + pad : right + pad]


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 (half-sample symmetric borders, radius 4σ, as SciPy's default)."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="symmetric")
    return np.stack([np.convolve(padded[:, k], weights, mode="valid") for k in range(values.shape[1])], axis=1)


def resize_square(image: np.ndarray, size: int = MOTION_INPUT_SIZE) -> np.ndarray:
    """Lanczos resize to ``size``×``size`` (what the motion encoder's input processing does)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.LANCZOS))


def boxes_drawn(frames: np.ndarray, boxes: np.ndarray, undetected: list[int] = ()) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames with their crop box drawn: green where the face was found,
    orange where the box was borrowed from neighbouring frames."""
    drawn = frames.copy()
    thickness = max(1, round(max(frames.shape[1:3]) / 200))
    missing = set(undetected)
    for index, (frame, box) in enumerate(zip(drawn, boxes)):
        left, top, right, bottom = (int(round(v)) for v in box)
        colour = (255, 160, 0) if index in missing else (0, 220, 0)
        cv2.rectangle(frame, (left, top), (right - 1, bottom - 1), colour, thickness)
    return drawn
