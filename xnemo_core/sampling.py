"""Samplers and speed presets: the official DDIM recipe, and faster ones priced in quality.

Every sampler is a diffusers scheduler built on the official noise schedule (same betas, same
``leading`` timestep spacing), so a sampler changes only how the steps are taken. The pipeline
averages the context windows' predictions and applies guidance *before* each scheduler step, so a
multistep solver's history holds whole-video predictions, never one window's.

Presets (``exact``, ``balanced``, ``fast``, ``turbo``) name concrete :class:`~xnemo_core.settings.AnimationSettings`
values; what they cost in quality is measured in ``bench/RESULTS.md`` (``evaluate --presets``).
"""

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .choices import SAMPLER_NAMES, SPEED_PRESETS, describe_preset, preset_settings  # noqa: F401 (re-exported)

OFFICIAL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

SAMPLERS = dict(
    zip(
        SAMPLER_NAMES,
        (
            (DDIMScheduler, {}),
            (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
            (UniPCMultistepScheduler, {"solver_order": 2}),
        ),
        strict=True,
    )
)
"""Sampler name → scheduler class and its settings on top of the official schedule."""


def make_scheduler(sampler: str) -> SchedulerMixin:
    """A fresh scheduler (multistep solvers keep state: one per video)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    kind, extra = SAMPLERS[sampler]
    return kind.from_config(DDIMScheduler(**OFFICIAL_SCHEDULER).config, **extra)


def predicted_clean(scheduler: SchedulerMixin, latents, noise_pred, timestep):
    """The clean latents a step's noise prediction implies (the official schedule predicts the
    noise, epsilon): ``(x_t - sqrt(1 - alpha_bar) * eps) / sqrt(alpha_bar)``, what previews show."""
    alpha = scheduler.alphas_cumprod[int(timestep)].to(latents.device, latents.dtype)
    return (latents - (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()
