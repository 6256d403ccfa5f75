"""Sampling settings of one video, and the checks that refuse meaningless ones before any work starts."""

import dataclasses
import math
from dataclasses import dataclass

from .choices import DEFAULT_SEED, SCHEDULES
from .official import OFFICIAL, OFFICIAL_CONTEXT_FRAMES
from .sampling import SAMPLERS, preset_settings
from .windows import long_windows, official_windows

SIZE_MULTIPLE = 64
MAX_GUIDANCE = 100.0
MAX_SIZE = 2048
"""Four times the official 512: past it the model is far outside what it was trained on, and a
48-frame video's frames alone take several GiB (they grow with the square of the size)."""
MAX_STEPS = 1000
"""The official noise schedule's timesteps: a sampler cannot take more steps than it has."""
SEED_LIMIT = 2**64
"""Seeds are the CPU generator's: whole numbers below 2**64."""


@dataclass
class AnimationSettings:
    """Sampling settings; the defaults are the official recipe's (:data:`~xnemo_core.official.OFFICIAL`)."""

    steps: int = OFFICIAL["steps"]
    guidance_scale: float = OFFICIAL["cfg"]
    denoise: float = OFFICIAL["denoise"]
    """Fraction of the ``steps`` schedule to run (as ComfyUI's KSampler ``denoise``): below 1 the
    start latents are noised only to a later timestep, keeping more of the portrait."""
    seed: int = DEFAULT_SEED
    height: int = OFFICIAL["size"]
    width: int = OFFICIAL["size"]
    schedule: str = "official"
    context_frames: int | None = None
    """Window length; ``None``: 24 for ``official``, the position encoding's limit for ``long``."""
    context_overlap: int = OFFICIAL["context_overlap"]
    window_batch: int = 1
    """Context windows per denoiser call (each is 2 rows under guidance)."""
    decode_chunk: int = OFFICIAL["decode_chunk"]
    """Frames per temporal VAE decode; the decoder mixes the frames of a chunk, so this changes the output."""
    sampler: str = "ddim"
    """A :data:`~xnemo_core.sampling.SAMPLERS` name; ``ddim`` is the official one."""
    guidance_until: float = 1.0
    """Fraction of the steps run with guidance (the first ones); the rest run the conditional rows alone."""
    deep_cache_interval: int = 1
    """Run the whole denoiser every this many steps; the steps between reuse its deep features and
    run only the outermost layers (1: every step whole, exact)."""

    @property
    def skipped_steps(self) -> int:
        return self.steps - max(1, round(self.steps * self.denoise))

    def with_preset(self, preset: str) -> "AnimationSettings":
        """These settings with a :data:`~xnemo_core.sampling.SPEED_PRESETS` preset's values."""
        return dataclasses.replace(self, **preset_settings(preset))

    def guided(self, step: int, total: int) -> bool:
        """Whether step ``step`` of the ``total`` run applies classifier-free guidance."""
        return self.guidance_scale > 1.0 and step < math.ceil(self.guidance_until * total)

    def window_length(self, max_window: int) -> int:
        if self.context_frames is not None:
            return self.context_frames
        return OFFICIAL_CONTEXT_FRAMES if self.schedule == "official" else max_window

    def windows(self, num_frames: int, max_window: int, offset: int = 0) -> list[list[int]]:
        """The context windows of one step (``offset`` matters to the ``official`` schedule only)."""
        window = self.window_length(max_window)
        if self.schedule == "official":
            return official_windows(num_frames, window, self.context_overlap, offset)
        return long_windows(num_frames, window, self.context_overlap)

    def validate(self, max_window: int | None = None) -> None:
        """Refuse settings that cannot give a meaningful video, naming the setting
        (:class:`SettingError`); the context length is checked when ``max_window`` is known."""
        if self.schedule not in SCHEDULES:
            raise SettingError("schedule", f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        _check_whole("steps", self.steps, 1, MAX_STEPS + 1)
        if not _is_number(self.guidance_scale) or not 1 <= self.guidance_scale <= MAX_GUIDANCE:
            raise SettingError(
                "guidance_scale",
                f"guidance scale must be a number from 1 (no guidance) to {MAX_GUIDANCE}, got {self.guidance_scale!r}",
            )
        for name in ("denoise", "guidance_until"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= 1:
                raise SettingError(name, f"{name.replace('_', ' ')} must be in (0, 1], got {value!r}")
        if self.sampler not in SAMPLERS:
            raise SettingError("sampler", f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        _check_whole("seed", self.seed, 0, SEED_LIMIT)
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or not SIZE_MULTIPLE <= value <= MAX_SIZE or value % SIZE_MULTIPLE:
                raise SettingError(
                    name,
                    f"{name} {value!r} must be a multiple of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIZE} "
                    f"(the official size is {OFFICIAL['size']})",
                )
        for name in ("window_batch", "decode_chunk", "deep_cache_interval"):
            _check_whole(name, getattr(self, name), 1)
        _check_whole("context_overlap", self.context_overlap, 0)
        if self.context_frames is not None:
            _check_whole("context_frames", self.context_frames, 1)
        if max_window is None:
            return
        window = self.window_length(max_window)
        if window > max_window:
            raise SettingError(
                "context_frames",
                f"context length {window} must be between 1 and {max_window} (the temporal position encoding's limit)",
            )
        if self.context_overlap >= window:
            raise SettingError(
                "context_overlap", f"context overlap {self.context_overlap} must be below the window length {window}"
            )


class SettingError(ValueError):
    """An :class:`AnimationSettings` value out of range; ``setting`` names the field."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_whole(name: str, value, minimum: int, limit: int | None = None) -> None:
    """``value`` must be an integer ``minimum <= value < limit``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (limit and value >= limit):
        bound = f"from {minimum} to {limit - 1}" if limit else f"at least {minimum}"
        raise SettingError(name, f"{name.replace('_', ' ')} must be a whole number {bound}, got {value!r}")
