"""Each model's recommended sampling recipe: the official one, or the one a model carries in its
own files (``recipe`` metadata, as the bundled model does: it was trained at 128² on face crops and
checked at 25 steps, denoise 0.8), so that a renamed copy keeps it.

A recipe is named in the front ends' words: ``size`` (height and width), ``cfg`` (guidance scale),
``crop`` (``detect`` or ``none``), and :class:`~xnemo_core.settings.AnimationSettings`' own names
for the rest; the official numbers are :mod:`~xnemo_core.official`'s.
"""

import json
from pathlib import Path

from .official import OFFICIAL, OFFICIAL_CONTEXT_FRAMES  # noqa: F401 (the front ends read them here)

AUTO = "auto"
"""A crop choice that takes the model's recipe."""


def recommended(model_path: str | Path) -> dict:
    """The whole recipe for the model at ``model_path``: the official one, with what the model's
    own ``recipe`` metadata changes."""
    from .layouts import open_layout

    path = Path(model_path)
    if not path.exists():
        return dict(OFFICIAL)
    layout = open_layout(path)
    return OFFICIAL | parse(layout.recipe(), layout.recipe_source())


def parse(text: str | None, source) -> dict:
    """A model file's ``recipe`` metadata (JSON) checked against the recipe's names and kinds."""
    if text is None:
        return {}
    try:
        recipe = json.loads(text)
    except ValueError:
        recipe = None
    if not isinstance(recipe, dict) or not all(
        name in OFFICIAL and _same_kind(value, OFFICIAL[name]) for name, value in recipe.items()
    ):
        raise ValueError(f"{source}: damaged 'recipe' metadata {text[:80]!r}; expected some of {sorted(OFFICIAL)}")
    _check_values(recipe, source)
    return recipe


RECIPE_NAMES = {"height": "size", "width": "size", "guidance_scale": "cfg"}
""":class:`~xnemo_core.settings.AnimationSettings` fields under another name in a recipe."""


def _check_values(recipe: dict, source) -> None:
    """Refuse a recipe value no animation could use, naming the model file, not a flag the user never passed."""
    from .choices import CROP_MODES
    from .portrait import animation_settings
    from .settings import SettingError

    try:
        crop = recipe.get("crop", OFFICIAL["crop"])
        if crop not in CROP_MODES:
            raise SettingError("crop", f"unknown crop mode {crop!r}; expected one of {', '.join(CROP_MODES)}")
        animation_settings(OFFICIAL | recipe)
    except SettingError as error:
        name = RECIPE_NAMES.get(error.setting, error.setting)
        raise ValueError(
            f"{source}: the model's 'recipe' metadata has an unusable {name} {recipe.get(name)!r} ({error}); "
            "the file is damaged or was written by another tool: convert the model again from its original files"
        ) from None


def _same_kind(value, official) -> bool:
    if isinstance(official, str):
        return isinstance(value, str)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def crop_mode(choice: str, recipe: dict) -> str:
    """``detect`` or ``none``: ``auto`` is the recipe's."""
    return recipe["crop"] if choice == AUTO else choice
