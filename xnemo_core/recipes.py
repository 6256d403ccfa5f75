"""Each model's recommended sampling recipe: the official one, or the bundled model's own (it was
trained at 128² on face crops and checked at 25 steps, denoise 0.8)."""

from pathlib import Path

from . import bundled

OFFICIAL = {"size": 512, "steps": 35, "denoise": 1.0, "crop": "detect"}


def recommended(model_path: str | Path) -> dict:
    """``size``, ``steps``, ``denoise`` and ``crop`` for the model at ``model_path``."""
    is_bundled = Path(model_path).resolve() == bundled.MODEL.resolve()
    return dict(bundled.MODEL_SETTINGS if is_bundled else OFFICIAL)
