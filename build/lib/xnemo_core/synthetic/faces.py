"""Procedural 2-D faces: an :class:`Identity` (what a person looks like) rendered with a motion
vector (head pose as 2-D warps, jaw, smile, blinks, brows, gaze), with OpenCV.

Everything is deterministic: identities and motion clips come from a seed, and rendering identity A
with the motion of B is the exact ground truth of cross-reenactment.
"""

from dataclasses import dataclass, fields

import cv2
import numpy as np

MOTION_FIELDS = (
    "yaw",
    "pitch",
    "roll",
    "jaw_open",
    "smile",
    "blink_left",
    "blink_right",
    "brow_raise",
    "gaze_x",
    "gaze_y",
)
"""Motion vector layout. Pose, brows and gaze lie in [-1, 1]; jaw, smile and blinks in [0, 1]."""
_SIGNED = np.array([name in ("yaw", "pitch", "roll", "brow_raise", "gaze_x", "gaze_y") for name in MOTION_FIELDS])
SUPERSAMPLING = 2
HAIR_STYLES = 3  # bald, short, long
LANDMARKS = 16


@dataclass(frozen=True)
class Identity:
    """Appearance of one synthetic person; lengths are fractions of the image size, colours RGB 0–255."""

    face_width: float
    face_height: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int
    fringe: float
    eye_spacing: float
    eye_size: float
    iris: tuple[int, int, int]
    nose_length: float
    mouth_width: float
    brow_thickness: float
    background_top: tuple[int, int, int]
    background_bottom: tuple[int, int, int]

    def vector(self) -> np.ndarray:
        """All parameters as one float vector, colours scaled to [0, 1] (for regressors and distances)."""
        values = []
        for field in fields(self):
            value = getattr(self, field.name)
            values.extend(np.asarray(value, np.float64) / 255.0 if isinstance(value, tuple) else [value])
        return np.asarray(values, np.float32)


def random_identity(rng: np.random.Generator) -> Identity:
    def colour(low: int, high: int) -> tuple[int, int, int]:
        return tuple(int(v) for v in rng.integers(low, high, 3))

    skin_tone = rng.uniform(0.25, 1.0)
    skin = tuple(int(c * skin_tone + 30) for c in (225, 180, 150))
    return Identity(
        face_width=float(rng.uniform(0.22, 0.30)),
        face_height=float(rng.uniform(0.28, 0.36)),
        skin=skin,
        hair=colour(10, 200),
        hair_style=int(rng.integers(0, HAIR_STYLES)),
        fringe=float(rng.uniform(0.0, 0.06)),
        eye_spacing=float(rng.uniform(0.17, 0.24)),
        eye_size=float(rng.uniform(0.030, 0.048)),
        iris=colour(20, 160),
        nose_length=float(rng.uniform(0.05, 0.10)),
        mouth_width=float(rng.uniform(0.10, 0.17)),
        brow_thickness=float(rng.uniform(0.008, 0.02)),
        background_top=colour(40, 256),
        background_bottom=colour(0, 200),
    )


def random_motion_clip(rng: np.random.Generator, frames: int, fps: float = 25.0) -> np.ndarray:
    """``(frames, len(MOTION_FIELDS))`` smoothly varying motion: a few random sinusoids per
    parameter, and blinks as short dips at random moments."""
    time = np.arange(frames)[:, None] / fps
    count = len(MOTION_FIELDS)
    frequencies = rng.uniform(0.1, 0.9, (3, count))
    phases = rng.uniform(0, 2 * np.pi, (3, count))
    amplitudes = rng.uniform(0.2, 1.0, (3, count)) / 1.5
    waves = sum(amplitudes[k] * np.sin(2 * np.pi * frequencies[k] * time + phases[k]) for k in range(3))
    offsets = rng.uniform(-0.5, 0.5, count)
    motion = np.tanh(waves + offsets)
    motion[:, ~_SIGNED] = (motion[:, ~_SIGNED] + 1) / 2
    for eye in ("blink_left", "blink_right"):
        motion[:, MOTION_FIELDS.index(eye)] *= 0.3
    blinks = rng.random(frames) < 1.5 / fps
    closure = np.convolve(blinks.astype(np.float64), [0.5, 1.0, 0.5])[1:-1].clip(0, 1)
    for eye in ("blink_left", "blink_right"):
        column = MOTION_FIELDS.index(eye)
        motion[:, column] = np.maximum(motion[:, column], closure)
    return motion.astype(np.float32)


def render_clip(identity: Identity, motion: np.ndarray, size: int = 128) -> np.ndarray:
    """``(F, size, size, 3)`` uint8 RGB frames of ``identity`` performing ``motion`` ``(F, 10)``."""
    return np.stack([render(identity, frame_motion, size) for frame_motion in motion])


def render(identity: Identity, motion: np.ndarray, size: int = 128) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 RGB frame."""
    m = dict(zip(MOTION_FIELDS, np.asarray(motion, np.float64)))
    canvas = size * SUPERSAMPLING
    image = _background(identity, canvas)
    head = np.zeros_like(image)
    mask = np.zeros((canvas, canvas), np.uint8)
    _draw_head(head, mask, identity, m, canvas)
    warp = _roll_warp(m, canvas)
    head = cv2.warpAffine(head, warp, (canvas, canvas), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(mask, warp, (canvas, canvas), flags=cv2.INTER_LINEAR)
    alpha = mask[..., None].astype(np.float32) / 255.0
    image = (image * (1 - alpha) + head * alpha).round().astype(np.uint8)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def landmarks(identity: Identity, motion: np.ndarray) -> np.ndarray:
    """``(LANDMARKS, 2)`` x, y positions, as fractions of the image size, of the points a face
    alignment network would mark: per eye the iris, the upper and lower lid and both brow ends;
    the nose tip; the mouth's corners and lip centres; the chin."""
    m = dict(zip(MOTION_FIELDS, np.asarray(motion, np.float64)))
    cx, cy, _, height, fx, fy = _head_frame(identity, m)
    points = []
    for eye in _eyes(identity, m, fx, fy):
        lid = identity.eye_size * eye.opening
        ex, ey = eye.centre
        points += [eye.iris, (ex, ey - lid), (ex, ey + lid), eye.brow_inner, eye.brow_outer]
    upper, lower = _mouth_outline(identity, m, fx, fy)
    points += [(fx + 0.05 * m["yaw"], fy + identity.nose_length), upper[0], upper[-1], upper[12], lower[12]]
    points.append((cx, cy + height))
    xy = np.asarray(points, np.float64)
    warp = _roll_warp(m, 1.0)
    return (xy @ warp[:, :2].T + warp[:, 2]).astype(np.float32)


def _roll_warp(m: dict, canvas: float) -> np.ndarray:
    """The ``(2, 3)`` rotation of the head about its neck (roll), in units of ``canvas``."""
    centre = (canvas * (0.5 + 0.03 * m["yaw"]), canvas * 0.55)
    return cv2.getRotationMatrix2D(centre, 20.0 * m["roll"], 1.0)


def _background(identity: Identity, canvas: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, canvas)[:, None, None]
    top, bottom = np.array(identity.background_top), np.array(identity.background_bottom)
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (canvas, canvas, 3)).astype(np.uint8).copy()


def _draw_head(image: np.ndarray, mask: np.ndarray, who: Identity, m: dict, canvas: int) -> None:
    def px(value: float) -> int:
        return int(round(value * canvas))

    def shape(draw, colour, *args) -> None:
        draw(image, *args, colour, -1, cv2.LINE_AA)
        draw(mask, *args, 255, -1, cv2.LINE_AA)

    cx, cy, width, height, fx, fy = _head_frame(who, m)
    darker = tuple(int(c * 0.8) for c in who.skin)
    if who.hair_style == 2:
        shape(cv2.ellipse, who.hair, (px(cx), px(cy + 0.05)), (px(width * 1.15), px(height * 1.2)), 0, 0, 360)
    shape(cv2.rectangle, darker, (px(cx - width * 0.45), px(cy)), (px(cx + width * 0.45), canvas))
    for side in (-1, 1):
        ear = (px(cx + side * width * 0.98 - 0.04 * m["yaw"]), px(cy))
        shape(cv2.ellipse, darker, ear, (px(0.035), px(0.06)), 0, 0, 360)
    shape(cv2.ellipse, who.skin, (px(cx), px(cy)), (px(width), px(height)), 0, 0, 360)
    if who.hair_style > 0:
        top = (px(cx), px(cy - height * 0.45 + who.fringe))
        shape(cv2.ellipse, who.hair, top, (px(width * 1.05), px(height * 0.65)), 0, 180, 360)
    _draw_eyes(image, who, m, fx, fy, px)
    nose_top, nose_tip = (px(fx + 0.02 * m["yaw"]), px(fy - 0.02)), (px(fx + 0.05 * m["yaw"]), px(fy + who.nose_length))
    cv2.line(image, nose_top, nose_tip, darker, max(1, px(0.012)), cv2.LINE_AA)
    _draw_mouth(image, who, m, fx, fy, px)


def _head_frame(who: Identity, m: dict) -> tuple[float, float, float, float, float, float]:
    """Head centre, half-width and half-height of the face, and the centre of its features."""
    cx = 0.5 + 0.03 * m["yaw"]
    cy = 0.55
    width = who.face_width * (1 - 0.12 * abs(m["yaw"]))
    height = who.face_height + 0.03 * m["jaw_open"]
    # Features turn with the head further than its outline does: a 2-D stand-in for yaw and pitch.
    fx, fy = cx + 0.09 * m["yaw"], cy + 0.05 * m["pitch"]
    return cx, cy, width, height, fx, fy


@dataclass(frozen=True)
class _Eye:
    centre: tuple[float, float]
    opening: float
    iris: tuple[float, float]
    brow_inner: tuple[float, float]
    brow_outer: tuple[float, float]


def _eyes(who: Identity, m: dict, fx: float, fy: float) -> list[_Eye]:
    eye_y = fy - 0.06
    eyes = []
    for side, blink in ((-1, m["blink_left"]), (1, m["blink_right"])):
        ex = fx + side * who.eye_spacing / 2
        brow_y = eye_y - who.eye_size * 1.6 - 0.025 * m["brow_raise"]
        tilt = 0.01 * m["brow_raise"]
        eyes.append(
            _Eye(
                centre=(ex, eye_y),
                opening=max(0.0, 1.0 - blink),
                iris=(ex + 0.5 * who.eye_size * m["gaze_x"], eye_y + 0.4 * who.eye_size * m["gaze_y"]),
                brow_inner=(ex - side * who.eye_size * 0.2, brow_y + tilt),
                brow_outer=(ex + side * who.eye_size * 1.5, brow_y - tilt),
            )
        )
    return eyes


def _draw_eyes(image: np.ndarray, who: Identity, m: dict, fx: float, fy: float, px) -> None:
    def point(xy):
        return px(xy[0]), px(xy[1])

    for eye in _eyes(who, m, fx, fy):
        axes = (px(who.eye_size * 1.3), max(1, px(who.eye_size * eye.opening)))
        cv2.ellipse(image, point(eye.centre), axes, 0, 0, 360, (250, 250, 250), -1, cv2.LINE_AA)
        if eye.opening > 0.2:
            radius = max(1, px(who.eye_size * 0.6 * min(1.0, eye.opening * 1.2)))
            cv2.circle(image, point(eye.iris), radius, who.iris, -1, cv2.LINE_AA)
            cv2.circle(image, point(eye.iris), max(1, radius // 2), (15, 15, 15), -1, cv2.LINE_AA)
        thickness = max(1, px(who.brow_thickness))
        cv2.line(image, point(eye.brow_inner), point(eye.brow_outer), who.hair, thickness, cv2.LINE_AA)


def _mouth_outline(who: Identity, m: dict, fx: float, fy: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper lip left to right and lower lip right to left, ``(24, 2)`` each."""
    mouth_y = fy + who.nose_length + 0.05 + 0.01 * m["jaw_open"]
    half = who.mouth_width / 2 * (1 + 0.3 * m["smile"])
    opening = 0.005 + 0.05 * m["jaw_open"]
    lift = 0.025 * m["smile"]
    xs = np.linspace(-half, half, 24)
    curve = lift * (1 - (xs / half) ** 2)  # corners up relative to the centre when smiling
    upper = np.stack([fx + xs, mouth_y - curve * 0.3 - opening / 2], axis=1)
    lower = np.stack([fx + xs[::-1], mouth_y + curve[::-1] * 0.7 + opening / 2 * (1 - (xs[::-1] / half) ** 2)], axis=1)
    return upper, lower


def _draw_mouth(image: np.ndarray, who: Identity, m: dict, fx: float, fy: float, px) -> None:
    outline = (np.concatenate(_mouth_outline(who, m, fx, fy)) * image.shape[0]).round().astype(np.int32)
    cv2.fillPoly(image, [outline], (110, 30, 40), cv2.LINE_AA)
    cv2.polylines(image, [outline], True, (150, 60, 70), max(1, px(0.006)), cv2.LINE_AA)
