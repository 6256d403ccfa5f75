"""What ships inside the pack, so that everything runs with no download: a small X-NeMo trained
on the synthetic face world (``bundled/models/xnemo-synthetic-128``, 128², fp16) and a demo portrait
and driving clip from held-out identities of that world (``bundled/demo``)."""

from functools import cache
from pathlib import Path

import numpy as np

BUNDLED = Path(__file__).resolve().parent.parent / "bundled"
MODEL_ROOT = BUNDLED / "models"
MODEL = MODEL_ROOT / "xnemo-synthetic-128"
DEMO_PORTRAIT = BUNDLED / "demo" / "portrait.png"
DEMO_DRIVING = BUNDLED / "demo" / "driving.mp4"
DEMO_FPS = 25.0

MODEL_SETTINGS = {"size": 128, "steps": 25, "denoise": 0.8, "crop": "none"}
"""Sampling settings the bundled model was checked with (its inputs are face crops already)."""

OUTSIDE_ITS_WORLD = (
    "the bundled model knows only the synthetic cartoon faces it was trained on: a real photo comes "
    "out as a cartoon face. For real portraits use the official X-NeMo weights (README: Models)."
)


def is_demo_portrait(image: np.ndarray) -> bool:
    """Whether an RGB ``uint8`` image is the bundled demo portrait (the bundled model's own world)."""
    demo = _demo_portrait()
    return image.shape == demo.shape and np.array_equal(image, demo)


@cache
def _demo_portrait() -> np.ndarray:
    from .video import read_image

    return read_image(DEMO_PORTRAIT)


def write_demo_media(folder: Path, frames: int = 48, seed: int = 20_000) -> tuple[Path, Path]:
    """Render the demo portrait (identity 0) and driving clip (identity 1) of a seed no training
    or evaluation set uses; returns their paths."""
    from .synthetic import render, render_clip
    from .train.data import SyntheticFaces
    from .video import write_image, write_video

    size = MODEL_SETTINGS["size"]
    world = SyntheticFaces(2, frames, size, seed=seed)
    portrait = write_image(folder / DEMO_PORTRAIT.name, render(world.identity(0), world.motion(0)[0], size))
    driving = render_clip(world.identity(1), world.motion(1), size)
    return portrait, write_video(folder / DEMO_DRIVING.name, driving, DEMO_FPS)
