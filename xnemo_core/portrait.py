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
    :class:`~xnemo_core.settings.AnimationSettings`' own for the rest; ``crop`` is not a sampling
    setting and is ignored here."""
    values = recipe | preset_settings(preset) | {name: value for name, value in chosen.items() if value is not None}
    values.pop("crop", None)
    size = values.pop("size")
    settings = AnimationSettings(height=size, width=size, guidance_scale=values.pop("cfg"), **values)
    settings.validate(max_window)
    return settings


def describe_run(
    model, recipe: dict, settings: AnimationSettings, preset: str, device, precision: str, compiled: bool
) -> str:
    """One line that says what is about to run, and why that many steps."""
    run = settings.steps - settings.skipped_steps
    steps = (
        f"{run} of {settings.steps} steps (denoise {settings.denoise:g})"
        if run < settings.steps
        else f"{run} step{'s' if run > 1 else ''}"
    )
    own = ", ".join(f"{name} {recipe[name]:g}" for name in ("size", "steps", "denoise"))
    return (
        f"animating with {model} (its recipe: {own}): {settings.height}×{settings.width}, {steps}, "
        f"preset {preset} ({settings.sampler}), cfg {settings.guidance_scale:g}, seed {settings.seed}; "
        f"{device}, {precision}, compile {'on' if compiled else 'off'}"
    )


def host_memory_needed(settings: AnimationSettings, num_frames: int, reference_pixels: int, decoder_width: int) -> int:
    """Rough bytes of host memory an animation needs besides the model: its frames as float32 and
    uint8, as many again pasted into the reference, and on the CPU about three full-size
    activations of the VAE decoder's widest top layer (``decoder_width`` channels) per decode chunk."""
    pixels = settings.height * settings.width
    frames = num_frames * (pixels + reference_pixels) * 3 * (4 + 1)
    decode = min(settings.decode_chunk, num_frames) * pixels * decoder_width * 4 * 3
    return frames + decode


def check_host_memory(settings: AnimationSettings, num_frames: int, reference_pixels: int, decoder_width: int) -> None:
    """Refuse, before any work, an animation that cannot fit in the memory available
    (:func:`host_memory_needed`; ``decoder_width`` 0 where the decoder runs on a GPU)."""
    needed, available = host_memory_needed(settings, num_frames, reference_pixels, decoder_width), available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"this animation needs about {needed / 2**30:.1f} GiB of memory and {available / 2**30:.1f} GiB are "
            "available; use a smaller --size, fewer --frames or a smaller --decode-chunk"
        )


def available_memory() -> int | None:
    """Memory the system can give without swapping (Linux's MemAvailable); ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as info:
            fields = dict(line.split(":", 1) for line in info)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


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
    on_preview: Callable | None = None,
) -> PortraitAnimation:
    """Animate ``portrait`` with ``motion`` tokens ``(F, 32, 16)`` and paste the frames back into it
    (``on_step``, ``on_preview``: see :meth:`~xnemo_core.pipeline.XNeMoPipeline.denoise`)."""
    crops = portrait.crops
    animation = pipeline.animate(crops.portrait, crops.face, motion, settings, on_step=on_step, on_preview=on_preview)
    if animation.video is None:
        return PortraitAnimation(None, None, None)
    frames = animation.video.numpy()
    original = portrait.image.astype(np.float32) / 255.0
    pasted, mask = paste_back(original, frames, crops.portrait_box, colour_match=colour_match)
    return PortraitAnimation(frames, pasted, mask)
