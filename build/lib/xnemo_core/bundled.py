"""What ships inside the pack, so that everything runs with no download: a small X-NeMo trained
on the synthetic face world (``bundled/models/xnemo-synthetic-128``, 128², fp16) and a demo portrait
and two driving clips from held-out identities of that world (``bundled/demo``).

The demo media are identities 0 (portrait, its first pose), 1 and 2 (driving clips, each with its
own motion) of ``SyntheticFaces(3, frames=48, size=128, seed=20_000)``, a seed no training or
evaluation set uses, rendered with :func:`~xnemo_core.synthetic.render` / ``render_clip`` at 25 fps."""

from functools import cache
from pathlib import Path

import numpy as np

_IN_CLONE = Path(__file__).resolve().parent.parent / "bundled"
_INSTALLED = Path(__file__).resolve().parent / "bundled_files"
"""Where ``pip install .`` puts the same files (pyproject.toml maps the folder into the package)."""
BUNDLED = _IN_CLONE if _IN_CLONE.is_dir() else _INSTALLED
MODEL_ROOT = BUNDLED / "models"
MODEL = MODEL_ROOT / "xnemo-synthetic-128"
DEMO_PORTRAIT = BUNDLED / "demo" / "portrait.png"
DEMO_DRIVING = BUNDLED / "demo" / "driving.mp4"
DEMO_DRIVING_B = BUNDLED / "demo" / "driving_b.mp4"
DEMO_MOTION = BUNDLED / "demo" / "motion.safetensors"
"""The demo clip's motion as the bundled model's encoder reads it (crop none, fp32), saved as a motion file."""
DEMO_FPS = 25.0

MODEL_SETTINGS = {"size": 128, "steps": 25, "denoise": 0.8, "crop": "none"}
"""Sampling settings the bundled model was checked with (its inputs are face crops already)."""

OUTSIDE_ITS_WORLD = (
    "hint: the bundled model knows only the synthetic cartoon faces it was trained on; if this "
    "reference is a real photo, it will come out as a cartoon face. For real portraits use the "
    "official X-NeMo weights (README: Models)."
)


def is_demo_portrait(image: np.ndarray) -> bool:
    """Whether an RGB ``uint8`` image is the bundled demo portrait (the bundled model's own world)."""
    demo = _demo_portrait()
    return image.shape == demo.shape and np.array_equal(image, demo)


@cache
def _demo_portrait() -> np.ndarray:
    from .video import read_image

    return read_image(DEMO_PORTRAIT)
