"""The one animate use case every front end calls: settings precedence, crops before the work."""

import dataclasses

import numpy as np
import pytest

from xnemo_core import bundled
from xnemo_core.portrait import Portrait, animation_settings
from xnemo_core.recipes import OFFICIAL, recommended
from xnemo_core.sampling import preset_settings
from xnemo_core.settings import AnimationSettings, SettingError


def test_the_official_recipe_gives_the_default_settings():
    assert animation_settings(OFFICIAL) == AnimationSettings()


def test_a_chosen_value_wins_over_the_preset_which_wins_over_the_recipe():
    recipe = recommended(bundled.MODEL)
    fast = animation_settings(recipe, "fast")
    assert fast.steps == preset_settings("fast")["steps"] != recipe["steps"]
    assert (fast.height, fast.width, fast.denoise) == (recipe["size"], recipe["size"], recipe["denoise"])
    chosen = animation_settings(recipe, "fast", steps=7, size=64, cfg=1.5, denoise=None)
    assert chosen == dataclasses.replace(fast, steps=7, height=64, width=64, guidance_scale=1.5)


def test_settings_are_checked_with_the_setting_named():
    with pytest.raises(SettingError) as error:
        animation_settings(OFFICIAL, size=100)
    assert error.value.setting == "height"


def test_portrait_notes_say_what_was_done_to_the_image():
    wide = np.zeros((60, 100, 3), np.uint8)
    portrait = Portrait.of(wide, detector=None, bundled_model=True)
    assert portrait.crops.portrait.shape[:2] == (60, 60)
    assert any("not square" in note for note in portrait.notes)
    assert any(note == bundled.OUTSIDE_ITS_WORLD for note in portrait.notes)
    assert Portrait.of(np.zeros((64, 64, 3), np.uint8), None).notes == []
