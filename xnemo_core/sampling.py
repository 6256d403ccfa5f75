"""Samplers and speed presets: the official DDIM recipe, and faster ones priced in quality.

Every sampler is a diffusers scheduler built on the official noise schedule (same betas, same
``leading`` timestep spacing), so a sampler changes only how the steps are taken. The pipeline
averages the context windows' predictions and applies guidance *before* each scheduler step, so a
multistep solver's history holds whole-video predictions, never one window's.

Presets (``exact``, ``balanced``, ``fast``) name concrete :class:`~xnemo_core.pipeline.AnimationSettings`
values; what they cost in quality is measured in ``bench/RESULTS.md`` (``evaluate --presets``).
"""

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

OFFICIAL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

SAMPLERS = {
    "ddim": (DDIMScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {"solver_order": 2}),
}
"""Sampler name → scheduler class and its settings on top of the official schedule."""

SPEED_PRESETS = {
    "exact": {"sampler": "ddim", "guidance_until": 1.0, "deep_cache_interval": 1},
    "balanced": {"sampler": "dpm++2m", "steps": 20, "guidance_until": 0.5, "deep_cache_interval": 1},
    "fast": {"sampler": "unipc", "steps": 12, "guidance_until": 0.5, "deep_cache_interval": 2},
}
"""Preset name → its settings. ``exact`` is the official sampling and keeps the model's recipe steps."""


def make_scheduler(sampler: str) -> SchedulerMixin:
    """A fresh scheduler (multistep solvers keep state: one per video)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    kind, extra = SAMPLERS[sampler]
    return kind.from_config(DDIMScheduler(**OFFICIAL_SCHEDULER).config, **extra)


def preset_settings(preset: str) -> dict:
    """A preset's settings, by field name of ``AnimationSettings``."""
    if preset not in SPEED_PRESETS:
        raise ValueError(f"unknown speed preset {preset!r}; choose one of {', '.join(SPEED_PRESETS)}")
    return dict(SPEED_PRESETS[preset])


def describe_preset(preset: str) -> str:
    """A preset in words, e.g. ``unipc, 12 steps, guidance on the first 50 % of steps, …``."""
    settings = preset_settings(preset)
    words = [settings["sampler"] + (" (official)" if settings["sampler"] == "ddim" else "")]
    words.append(f"{settings['steps']} steps" if "steps" in settings else "the model's recipe steps")
    if settings["guidance_until"] < 1:
        words.append(f"guidance on the first {settings['guidance_until']:.0%} of steps")
    if settings["deep_cache_interval"] > 1:
        words.append(f"whole denoiser every {settings['deep_cache_interval']} steps, deep features reused between")
    return ", ".join(words)
