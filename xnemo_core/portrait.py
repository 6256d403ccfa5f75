"""Animating one portrait, the way every front end (the CLI, the ComfyUI nodes, the bench) does it.

    chosen values ─┐
    speed preset ──┼─► animation_settings ─► AnimationSettings
    model recipe ──┘
    reference image ─► Portrait.of (crops, notes) ─┐
    motion tokens ─────────────────────────────────┴─► animate_portrait ─► frames, pasted back, mask

Driving frames become motion tokens through :func:`~xnemo_core.face.driving_crops` and
:meth:`~xnemo_core.pipeline.XNeMoPipeline.encode_motion`. The crops are taken before any model runs,
so a face that cannot be found is reported before the slow work starts.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import bundled
from .composite import paste_back
from .face import FaceDetector, ReferenceCrops, reference_crops
from .pipeline import AnimationSettings, XNeMoPipeline
from .sampling import preset_settings


def animation_settings(
    recipe: dict, preset: str = "exact", max_window: int | None = None, **chosen
) -> AnimationSettings:
    """The settings a front end asked for, validated (the window length too when the model's
    ``max_window`` is known): every chosen value (``None``: not chosen) wins over the speed
    preset's, which wins over the model's ``recipe`` (:mod:`~xnemo_core.recipes`).

    Names are the recipes': ``size`` (height and width), ``cfg`` (guidance scale) and
    :class:`~xnemo_core.pipeline.AnimationSettings`' own for the rest; ``crop`` is not a sampling
    setting and is ignored here."""
    values = recipe | preset_settings(preset) | {name: value for name, value in chosen.items() if value is not None}
    values.pop("crop", None)
    size = values.pop("size")
    settings = AnimationSettings(height=size, width=size, guidance_scale=values.pop("cfg"), **values)
    settings.validate(max_window)
    return settings


@dataclass
class Portrait:
    """The reference image and its crops, with what its owner should hear about them."""

    image: np.ndarray
    """``(H, W, 3)`` uint8 RGB."""
    crops: ReferenceCrops
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, image: np.ndarray, detector: FaceDetector | None, bundled_model: bool = False) -> "Portrait":
        """``detector=None``: the image is a face crop already. ``bundled_model`` warns when the
        bundled model (which knows only its synthetic faces) is given another image."""
        notes = [bundled.OUTSIDE_ITS_WORLD] if bundled_model and not bundled.is_demo_portrait(image) else []
        crops = reference_crops(image, detector)
        return cls(image, crops, notes + ([crops.note] if crops.note else []))


@dataclass
class PortraitAnimation:
    """One animated portrait; every field is ``None`` on ranks other than 0 of a process group."""

    frames: np.ndarray | None
    """``(F, S, S, 3)`` float32 in ``[0, 1]``: the animated crop."""
    pasted: np.ndarray | None
    """``(F, H, W, 3)`` float32: the frames pasted back into the reference image."""
    mask: np.ndarray | None
    """``(H, W)`` float32: where they were pasted (1 inside, a feathered border)."""


def animate_portrait(
    pipeline: XNeMoPipeline,
    portrait: Portrait,
    motion: torch.Tensor,
    settings: AnimationSettings,
    colour_match: bool = False,
    on_step: Callable | None = None,
) -> PortraitAnimation:
    """Animate ``portrait`` with ``motion`` tokens ``(F, 32, 16)`` and paste the frames back into it."""
    crops = portrait.crops
    animation = pipeline.animate(crops.portrait, crops.face, motion, settings, on_step=on_step)
    if animation.video is None:
        return PortraitAnimation(None, None, None)
    frames = animation.video.numpy()
    original = portrait.image.astype(np.float32) / 255.0
    pasted, mask = paste_back(original, frames, crops.portrait_box, colour_match=colour_match)
    return PortraitAnimation(frames, pasted, mask)
