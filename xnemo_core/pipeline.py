"""Portrait animation: reference portrait + per-frame motion tokens → video frames.

The official recipe, computed without its waste:

1. once per video: CLIP embeds and VAE latents of the portrait, the reference UNet's tokens (at
   timestep 0, conditional row only), the unconditional motion tokens (the portrait's own face);
2. once per driving frame: motion tokens (:meth:`XNeMoPipeline.encode_motion`);
3. start latents: the portrait latents repeated over frames, Gaussian-blurred, noised to the first
   DDIM timestep;
4. every DDIM step: context windows (several per forward call, unconditional and conditional rows
   together), predictions averaged over overlapping windows, then classifier-free guidance;
5. SVD temporal VAE decode in chunks.

Every random draw (start noise, window offsets) comes from one ``torch.Generator`` seeded by
``settings.seed``, on the CPU so that a seed gives the same video on any device. Both draws can be
injected instead (``noise=``, ``offsets=``), which is how the golden fixture is reproduced.
"""

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from einops import rearrange

from . import distributed
from .choices import DEFAULT_SEED, SCHEDULES
from .compiling import Denoiser
from .decoding import decode_video
from .finite import check_finite
from .layouts import PART_ORIGINS
from .models import XNeMoModels
from .models.group_norm import fuse_group_norm_silu
from .models.reference import ReferenceBank, ReferenceTokens, capture_reference, project_reference
from .preprocess import clip_input, gaussian_blur, motion_input, vae_input
from .official import OFFICIAL, OFFICIAL_CONTEXT_FRAMES
from .sampling import SAMPLERS, make_scheduler, predicted_clean, preset_settings
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

StepCallback = Callable[[int, int], None]
PreviewCallback = Callable[[torch.Tensor], None]
"""Called at every step, before its ``on_step``, with the predicted clean latents ``(F, 4, h, w)``."""
"""Called after each denoising step with ``(steps done, total steps)``; may raise to interrupt."""


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


@dataclass
class ReferenceCondition:
    """What the portrait contributes, computed once per video (on the pipeline's device)."""

    clip_embeds: torch.Tensor
    """``(1, 1, D)`` CLIP image embeds."""
    latents: torch.Tensor
    """``(1, 4, h, w)`` VAE latents, already scaled."""
    tokens: ReferenceTokens
    """Reference UNet self-attention inputs, by layer."""
    unconditional_motion: torch.Tensor
    """``(1, 32, 16)`` motion tokens of the portrait's own face."""


@dataclass
class Animation:
    video: torch.Tensor | None
    """``(F, H, W, 3)`` float32 in ``[0, 1]`` on the CPU; ``None`` on ranks other than 0 of a process group."""
    latents: torch.Tensor
    """``(1, 4, F, h, w)`` final latents before the VAE scaling is undone."""


class XNeMoPipeline:
    """Runs :class:`~xnemo_core.models.XNeMoModels` on ``device``.

    With ``offload=True`` the modules that run once (CLIP, VAE, reference UNet, motion encoder)
    stay on the CPU and visit the device only while they run, and the denoiser leaves the device
    before decoding, which keeps peak GPU memory to the denoiser plus activations.

    ``compile`` (``auto``, ``on``, ``off``; see :mod:`~xnemo_core.compiling`) runs the denoiser
    compiled, with CUDA graphs unless offloading moves its weights between calls.

    ``decoder``: a tiny decoder (:mod:`~xnemo_core.tiny_decoder`) to decode with in place of the VAE.

    The VAE's ``GroupNorm → SiLU`` pairs run as fused kernels on CUDA
    (:func:`~xnemo_core.models.group_norm.fuse_group_norm_silu`: same parameters, the same results up
    to fp16 / bf16 rounding).
    """

    def __init__(
        self,
        models: XNeMoModels,
        device: str | torch.device = "cpu",
        offload: bool = False,
        compile: str = "off",
        decoder: torch.nn.Module | None = None,
    ):
        missing = [PART_ORIGINS[part] for part in ("image_encoder", "vae") if getattr(models, part) is None]
        if missing:
            raise ValueError(
                "animation needs a CLIP image encoder and a VAE; the model has no "
                + " and no ".join(f"{name} ({where}, from {source})" for name, where, source in missing)
            )
        if decoder is not None and models.latent_rgb is not None:
            raise ValueError(
                "the tiny decoder reads Stable Diffusion's latents, and this model's VAE has a latent space of its "
                "own (its files carry latent_rgb factors): decode with its VAE (leave out the tiny decoder)"
            )
        self.models, self.device, self.offload = models, torch.device(device), offload
        self.decoder = decoder if decoder is not None else models.vae
        fuse_group_norm_silu(models.vae)
        self.dtype = models.denoising_unet.dtype
        cuda_graphs = self.device.type == "cuda" and not offload
        self.denoiser = Denoiser(models.denoising_unet, compile, self.device, cuda_graphs)
        placement = "cpu" if offload else self.device
        models.to(device=placement)
        if decoder is not None:
            torch.nn.Module.to(decoder, placement, self.dtype)

    @contextmanager
    def _on_device(self, *modules: torch.nn.Module) -> Iterator[None]:
        if self.offload:
            for module in modules:
                torch.nn.Module.to(module, self.device)
        try:
            yield
        finally:
            if self.offload:
                for module in modules:
                    torch.nn.Module.to(module, "cpu")

    @torch.no_grad()
    def encode_motion(self, faces: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        """Face crops ``(N, h, w, 3)`` uint8 → motion tokens ``(N, 32, 16)`` float32 on the CPU."""
        encoder = self.models.motion_encoder
        tokens = []
        with self._on_device(encoder):
            for start in range(0, len(faces), batch_size):
                pixels = motion_input(faces[start : start + batch_size], encoder.face_size)
                pixels = pixels.to(self.device, encoder.dtype)
                tokens.append(encoder(pixels).float().cpu())
        tokens = torch.cat(tokens)
        check_finite("the motion encoder", tokens)
        return tokens

    @torch.no_grad()
    def encode_reference(self, image: np.ndarray, face: np.ndarray, height: int, width: int) -> ReferenceCondition:
        """Portrait ``(H, W, 3)`` and its face crop, both uint8 RGB."""
        models = self.models
        with self._on_device(models.image_encoder):
            size = models.image_encoder.config.image_size
            pixels = clip_input(image, size).to(self.device, models.image_encoder.dtype)
            clip_embeds = models.image_encoder(pixels).image_embeds[:, None]
        check_finite("the CLIP image encoder", clip_embeds)
        latents = self.encode_latents(vae_input(image, height, width))
        check_finite("the VAE encoder", latents)
        with self._on_device(models.reference_unet):
            tokens = capture_reference(models.reference_unet, latents.to(self.dtype), clip_embeds.to(self.dtype))
        check_finite("the reference UNet", *tokens.values())
        unconditional = self.encode_motion(face[None]).to(self.device)
        return ReferenceCondition(clip_embeds, latents, tokens, unconditional)

    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 3, H, W)`` in [-1, 1] → scaled VAE latents ``(N, 4, H/8, W/8)`` (posterior means)."""
        vae = self.models.vae
        with self._on_device(vae):
            return vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.mean * vae.config.scaling_factor

    def start_latents(
        self,
        reference_latents: torch.Tensor,
        num_frames: int,
        scheduler: SchedulerMixin,
        timestep: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """Blurred portrait latents noised to the first ``timestep`` ``(1,)``: ``(1, 4, F, h, w)`` float32."""
        blurred = gaussian_blur(reference_latents.float())
        repeated = blurred[:, :, None].expand(-1, -1, num_frames, -1, -1)
        return scheduler.add_noise(repeated, noise.to(repeated.device, torch.float32), timestep)

    @torch.no_grad()
    def denoise(
        self,
        condition: ReferenceCondition,
        motion: torch.Tensor,
        settings: AnimationSettings,
        noise: torch.Tensor | None = None,
        offsets: list[int] | None = None,
        on_step: StepCallback | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> torch.Tensor:
        """Sampling of ``F = len(motion)`` frames; returns latents ``(1, 4, F, h, w)`` float32.
        ``on_preview`` (see :data:`PreviewCallback`) costs nothing when absent."""
        config = self.models.config
        settings.validate(config.max_window)
        num_frames = len(motion)
        if num_frames < 1:
            raise ValueError("no driving frames: the motion is empty")
        if not torch.isfinite(motion).all():
            raise ValueError("the motion tokens hold NaN or infinite values")
        shape = (1, 4, num_frames, settings.height // 8, settings.width // 8)
        generator = torch.Generator("cpu").manual_seed(settings.seed)
        if noise is None:
            noise = torch.randn(shape, generator=generator)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
        if offsets is None:
            window = settings.window_length(config.max_window)
            offsets = torch.randint(0, window, (settings.steps,), generator=generator).tolist()
        scheduler = make_scheduler(settings.sampler)
        # The schedule stays on the CPU, so that no step makes the host wait for the GPU.
        scheduler.set_timesteps(settings.steps)
        timesteps = scheduler.timesteps[settings.skipped_steps :]
        latents = self.start_latents(condition.latents, num_frames, scheduler, timesteps[:1], noise)
        motion = motion.to(self.device)
        denoiser_timesteps = timesteps.to(self.device)
        total = len(timesteps)
        with self._on_device(self.models.denoising_unet):
            reference = project_reference(self.models.denoising_unet, condition.tokens)
            cache = DeepFeatureCache(num_frames) if settings.deep_cache_interval > 1 else None
            ranks = distributed.current()
            for step, timestep in enumerate(timesteps):
                call = _StepCall(
                    ranks,
                    reference,
                    condition,
                    motion,
                    denoiser_timesteps[step],
                    guided=settings.guided(step, total),
                    cache=cache,
                    refresh=step % settings.deep_cache_interval == 0,
                )
                windows = settings.windows(num_frames, config.max_window, offsets[step])
                noise_pred = self._guided_prediction(call, latents, windows, settings)
                if on_preview is not None:
                    clean = predicted_clean(scheduler, latents, noise_pred, timestep)
                    on_preview(rearrange(clean[0], "c f h w -> f c h w"))
                latents = scheduler.step(noise_pred, timestep, latents).prev_sample
                if on_step is not None:
                    on_step(step + 1, total)
        self.denoiser.video_denoised()
        check_finite("the denoising UNet", latents)
        return latents

    def _guided_prediction(self, call: "_StepCall", latents, windows, settings) -> torch.Tensor:
        """Window-averaged noise prediction of every frame, with classifier-free guidance applied."""
        average = FrameMean(latents.shape[2], axis=2)
        batches = [self._indices(batch) for batch in _batches(windows, settings.window_batch)]
        predict = partial(self._predict, call, latents)
        for batch, (prediction, *deep) in distributed.spread(batches, predict, call.ranks, self.device):
            if deep:
                call.cache.add(batch, deep[0], call.rows)
            for row, frames in enumerate(batch):
                average.add(frames, prediction[row :: len(batch)])
        if call.cache is not None and call.refresh:
            call.cache.finish_refresh()
        mean = average.mean()
        if not call.guided:
            return mean
        unconditional, conditional = mean.chunk(2)
        return unconditional + settings.guidance_scale * (conditional - unconditional)

    def _indices(self, windows: list[list[int]]) -> torch.Tensor:
        """Equal-length windows as a ``(W, f)`` frame index on the device, copied from pinned
        memory: a copy from pageable memory would first wait for the GPU to finish its queue."""
        indices = torch.tensor(windows)
        if self.device.type == "cuda":
            indices = indices.pin_memory()
        return indices.to(self.device, non_blocking=True)

    def _predict(self, call: "_StepCall", latents, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One denoiser call on windows ``(W, f)`` of frames: the prediction, rows ``[uncond…,
        cond…]``, and on steps that refresh the deep feature cache, the deep features."""
        condition = call.condition
        window_latents = rearrange(latents[0][:, windows], "c w f h x -> w c f h x")
        window_motion = call.motion[windows]
        clip = condition.clip_embeds.expand(len(windows), -1, -1)
        if call.guided:
            window_latents = torch.cat([window_latents, window_latents])
            unconditional = condition.unconditional_motion.expand_as(window_motion)
            window_motion = torch.cat([unconditional, window_motion])
            clip = torch.cat([torch.zeros_like(clip), clip])
        cached = call.cache is not None and not call.refresh
        prediction = self.denoiser(
            window_latents.to(self.dtype),
            call.timestep,
            clip.to(self.dtype),
            window_motion.to(self.dtype),
            call.reference,
            reference_rows=slice(len(windows), None) if call.guided else slice(None),
            deep_features=call.cache.gather(windows, call.rows) if cached else None,
            keep_deep=call.cache is not None and call.refresh,
        )
        return prediction if isinstance(prediction, tuple) else (prediction,)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int = 25, slice_frames: int | None = None) -> torch.Tensor:
        """Latents ``(1, 4, F, h, w)`` → frames ``(F, H, W, 3)`` float32 in ``[0, 1]`` on the CPU
        (:func:`~xnemo_core.decoding.decode_video`: ``chunk`` frames a call, ``slice_frames`` at a time)."""
        with self._on_device(self.decoder):
            return decode_video(self.decoder, latents, chunk, self.device, slice_frames)

    def animate(
        self,
        reference_image: np.ndarray,
        reference_face: np.ndarray,
        motion: torch.Tensor,
        settings: AnimationSettings,
        noise: torch.Tensor | None = None,
        offsets: list[int] | None = None,
        on_step: StepCallback | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> Animation:
        """Animate the portrait with ``motion`` ``(F, 32, 16)`` (from :meth:`encode_motion`).

        In a process group of several ranks (:mod:`~xnemo_core.distributed`) every rank calls this;
        the denoising is shared and rank 0 alone decodes (the others' ``video`` is ``None``).
        The settings are checked before the portrait is encoded."""
        settings.validate(self.models.config.max_window)
        condition = self.encode_reference(reference_image, reference_face, settings.height, settings.width)
        latents = self.denoise(condition, motion, settings, noise, offsets, on_step, on_preview)
        ranks = distributed.current()
        video = self.decode(latents, settings.decode_chunk) if ranks is None or ranks.rank == 0 else None
        return Animation(video, latents)


@dataclass(frozen=True)
class _StepCall:
    """What every denoiser call of one sampling step shares."""

    ranks: distributed.Ranks | None
    """The process group the step's denoiser calls are spread over (``None``: this process alone)."""
    reference: ReferenceBank
    condition: ReferenceCondition
    motion: torch.Tensor
    """``(F, 32, 16)`` on the device."""
    timestep: torch.Tensor
    guided: bool
    cache: "DeepFeatureCache | None"
    refresh: bool
    """Whether this step runs the whole denoiser (and refreshes ``cache``)."""

    @property
    def rows(self) -> int:
        """Rows per window: unconditional and conditional under guidance, else conditional alone."""
        return 2 if self.guided else 1


class FrameMean:
    """The per-frame mean of what several context windows say about each frame: ``add`` values
    whose axis ``axis`` runs over a window's frames, then read the mean (summed in float32)."""

    def __init__(self, num_frames: int, axis: int):
        self.num_frames, self.axis = num_frames, axis
        self._sum: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    def add(self, frames, values: torch.Tensor) -> None:
        values = values.float().movedim(self.axis, 0)
        if self._sum is None:
            self._sum = values.new_zeros((self.num_frames, *values.shape[1:]))
            self._count = values.new_zeros(self.num_frames)
        self._sum[frames] += values
        self._count[frames] += 1

    def mean(self) -> torch.Tensor:
        counts = self._count.view(-1, *[1] * (self._sum.ndim - 1))
        return (self._sum / counts).movedim(0, self.axis)


class DeepFeatureCache:
    """The deep features of the last whole step, per frame, for the steps that skip the deep layers.

    Context windows move between steps (the official schedule shifts them), so features are kept
    per frame and row (unconditional, conditional), averaged over the windows that saw the frame,
    and gathered for whatever windows a later step uses.
    """

    def __init__(self, num_frames: int):
        self.num_frames = num_frames
        self.features: torch.Tensor | None = None
        """``(rows, F, C, h, w)`` in the denoiser's dtype; the last row is the conditional one."""
        self._refreshing: FrameMean | None = None
        self._dtype: torch.dtype | None = None

    def add(self, windows: torch.Tensor, deep: torch.Tensor, rows: int) -> None:
        """Deep features ``(rows*W*f, C, h, w)`` of one denoiser call on windows ``(W, f)`` of frames."""
        self._dtype = deep.dtype
        if self._refreshing is None:
            self._refreshing = FrameMean(self.num_frames, axis=1)
        deep = rearrange(deep, "(r w f) c h x -> r w f c h x", r=rows, w=len(windows))
        for window, features in zip(windows, deep.unbind(1)):
            self._refreshing.add(window, features)

    def finish_refresh(self) -> None:
        self.features = self._refreshing.mean().to(self._dtype)
        self._refreshing = None

    def gather(self, windows: torch.Tensor, rows: int) -> torch.Tensor:
        """The features of windows ``(W, f)`` as a denoiser call's ``(rows*W*f, C, h, w)`` input."""
        features = self.features[-rows:, windows]
        return rearrange(features, "r w f c h x -> (r w f) c h x")


def _batches(windows: list[list[int]], size: int) -> Iterator[list[list[int]]]:
    """Consecutive groups of at most ``size`` windows of equal length."""
    group: list[list[int]] = []
    for window in windows:
        if group and (len(group) == size or len(window) != len(group[0])):
            yield group
            group = []
        group.append(window)
    if group:
        yield group
