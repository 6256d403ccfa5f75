"""Options nodes for Animate Portrait: the settings most graphs never touch, plugged in only where
wanted (as the video wrappers' context and speed options do). Without them Animate Portrait runs
the defaults these nodes show."""

from xnemo_core.choices import COMPILE_MODES, SAMPLER_NAMES, SCHEDULES
from xnemo_core.recipes import OFFICIAL, OFFICIAL_CONTEXT_FRAMES
from xnemo_core.sampling import SPEED_PRESETS, describe_preset

from .declare import Node, Socket

CONTEXT_TYPE = "XNEMO_CONTEXT_OPTIONS"
SPEED_TYPE = "XNEMO_SPEED_OPTIONS"
PRESET_VALUE = "preset"
"""A speed option's choice that keeps the preset's value."""

CONTEXT_DEFAULTS = {
    "schedule": "official",
    "context_frames": OFFICIAL_CONTEXT_FRAMES,
    "context_overlap": OFFICIAL["context_overlap"],
    "window_batch": 1,
}
SPEED_DEFAULTS = {
    "preset": "exact",
    "sampler": PRESET_VALUE,
    "guidance_until": 0.0,
    "deep_cache_interval": 0,
    "compile": "auto",
}
"""What Animate Portrait runs without an options node (0 and ``preset``: the preset's own value)."""


def context_options(schedule, context_frames, context_overlap, window_batch) -> tuple[dict]:
    return (dict(schedule=schedule, context_frames=context_frames, context_overlap=context_overlap, window_batch=window_batch),)


def speed_options(preset, sampler, guidance_until, deep_cache_interval, compile) -> tuple[dict]:
    values = dict(preset=preset, sampler=sampler, guidance_until=guidance_until, compile=compile)
    return (values | {"deep_cache_interval": deep_cache_interval},)


def sampling_choices(context: dict | None, speed: dict | None) -> tuple[str, str, dict]:
    """``(preset, compile mode, AnimationSettings values)`` of the options (``None``: the defaults);
    a speed override left at 0 / ``preset`` does not override."""
    context = CONTEXT_DEFAULTS | (context or {})
    speed = SPEED_DEFAULTS | (speed or {})
    overrides = {
        "sampler": None if speed["sampler"] == PRESET_VALUE else speed["sampler"],
        "guidance_until": speed["guidance_until"] or None,
        "deep_cache_interval": speed["deep_cache_interval"] or None,
    }
    return speed["preset"], speed["compile"], context | overrides


CONTEXT_OPTIONS = Node(
    "XNeMoContextOptions",
    "X-NeMo Context Options",
    "How Animate Portrait cuts a clip into context windows (the frames the denoiser sees together); connect "
    "to its context_options. Without it: the official windows.",
    context_options,
    inputs=(
        Socket(
            "schedule",
            "COMBO",
            default=CONTEXT_DEFAULTS["schedule"],
            options=SCHEDULES,
            tooltip="official: windows shifted every step and wrapping round the clip (a loop); long: the fewest "
            "windows in order, no wrap (faster on long clips)",
        ),
        Socket(
            "context_frames",
            "INT",
            default=CONTEXT_DEFAULTS["context_frames"],
            minimum=1,
            maximum=32,
            tooltip=f"frames the denoiser sees together ({OFFICIAL_CONTEXT_FRAMES} official, at most 32)",
        ),
        Socket(
            "context_overlap",
            "INT",
            default=CONTEXT_DEFAULTS["context_overlap"],
            minimum=0,
            maximum=31,
            tooltip=f"frames shared by neighbouring windows ({OFFICIAL['context_overlap']} official)",
        ),
        Socket(
            "window_batch",
            "INT",
            default=CONTEXT_DEFAULTS["window_batch"],
            minimum=1,
            maximum=16,
            tooltip="context windows per denoiser call: more is faster on a large GPU, needs more VRAM; the same frames",
        ),
    ),
    outputs=(Socket("context_options", CONTEXT_TYPE, tooltip="to Animate Portrait's context_options"),),
)
SPEED_OPTIONS = Node(
    "XNeMoSpeedOptions",
    "X-NeMo Speed Options",
    "How fast Animate Portrait samples, priced in quality: a speed preset, its values overridden one by one, and "
    "compilation; connect to its speed_options. Without it: exact (the official sampling), compile auto.",
    speed_options,
    inputs=(
        Socket(
            "preset",
            "COMBO",
            default=SPEED_DEFAULTS["preset"],
            options=tuple(SPEED_PRESETS),
            tooltip="; ".join(f"{name}: {describe_preset(name)}" for name in SPEED_PRESETS),
        ),
        Socket(
            "sampler",
            "COMBO",
            default=PRESET_VALUE,
            options=(PRESET_VALUE, *SAMPLER_NAMES),
            tooltip="preset: the preset's sampler; ddim is the official one",
        ),
        Socket(
            "guidance_until",
            "FLOAT",
            default=SPEED_DEFAULTS["guidance_until"],
            minimum=0.0,
            maximum=1.0,
            step=0.05,
            tooltip="fraction of the steps run with guidance, the first ones; 0: the preset's",
        ),
        Socket(
            "deep_cache_interval",
            "INT",
            default=SPEED_DEFAULTS["deep_cache_interval"],
            minimum=0,
            maximum=8,
            tooltip="run the whole denoiser every N steps, reusing its deep features between; 0: the preset's (1: off)",
        ),
        Socket(
            "compile",
            "COMBO",
            default=SPEED_DEFAULTS["compile"],
            options=COMPILE_MODES,
            tooltip="compile the denoiser. auto (NVIDIA GPUs with Triton and room for it): a video of a new size runs "
            "uncompiled and its shapes compile once it is denoised, later videos run compiled; on: compile first "
            "and wait (minutes); off: never",
        ),
    ),
    outputs=(Socket("speed_options", SPEED_TYPE, tooltip="to Animate Portrait's speed_options"),),
)
