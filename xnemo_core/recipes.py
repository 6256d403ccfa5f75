"""Each model's recommended sampling recipe: the official one, or the bundled model's own (it was
trained at 128² on face crops and checked at 25 steps, denoise 0.8).

A recipe is named in the front ends' words: ``size`` (height and width), ``cfg`` (guidance scale),
``crop`` (``detect`` or ``none``), and :class:`~xnemo_core.pipeline.AnimationSettings`' own names
for the rest. This is the one place the official numbers are written.
"""

from pathlib import Path

from . import bundled

OFFICIAL = {
    "size": 512,
    "steps": 35,
    "cfg": 2.5,
    "denoise": 1.0,
    "crop": "detect",
    "context_overlap": 4,
    "decode_chunk": 25,
}
OFFICIAL_CONTEXT_FRAMES = 24
"""The official schedule's window length (the ``long`` schedule takes the position encoding's limit)."""
AUTO = "auto"
"""A crop choice that takes the model's recipe."""


def recommended(model_path: str | Path) -> dict:
    """The whole recipe for the model at ``model_path`` (the official one for any but the bundled model)."""
    is_bundled = Path(model_path).resolve() == bundled.MODEL.resolve()
    return OFFICIAL | (bundled.MODEL_SETTINGS if is_bundled else {})


def crop_mode(choice: str, recipe: dict) -> str:
    """``detect`` or ``none``: ``auto`` is the recipe's."""
    return recipe["crop"] if choice == AUTO else choice
