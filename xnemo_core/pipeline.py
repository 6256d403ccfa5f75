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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from einops import rearrange

from . import distributed
from .compiling import Denoiser
from .decoding import decode_video
from .finite import check_finite
from .layouts import PART_ORIGINS
from .models import XNeMoModels
from .models.group_norm import fuse_group_norm_silu
from .models.reference import ReferenceTokens, capture_reference, project_reference
from .preprocess import clip_input, gaussian_blur, motion_input, vae_input
from .sampling import make_scheduler, predicted_clean
from .settings import AnimationSettings
from .window_prediction import DeepFeatureCache, StepCall, WindowPredictor

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with ``(steps done, total steps)``; may raise to interrupt."""
PreviewCallback = Callable[[torch.Tensor], None]
"""Called at every step, before its ``on_step``, with the predicted clean latents ``(F, 4, h, w)``."""


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
        noise, offsets = _random_draws(settings, shape, config.max_window, noise, offsets)
        scheduler = make_scheduler(settings.sampler)
        # The schedule stays on the CPU, so that no step makes the host wait for the GPU.
        scheduler.set_timesteps(settings.steps)
        timesteps = scheduler.timesteps[settings.skipped_steps :]
        latents = self.start_latents(condition.latents, num_frames, scheduler, timesteps[:1], noise)
        motion = motion.to(self.device)
        denoiser_timesteps = timesteps.to(self.device)
        total = len(timesteps)
        with self._on_device(self.models.denoising_unet):
            predict_noise = WindowPredictor(
                self.denoiser,
                self.device,
                self.dtype,
                project_reference(self.models.denoising_unet, condition.tokens),
                condition.clip_embeds,
                motion,
                condition.unconditional_motion,
                settings.window_batch,
                settings.guidance_scale,
                cache=DeepFeatureCache(num_frames) if settings.deep_cache_interval > 1 else None,
                ranks=distributed.current(),
            )
            for step, timestep in enumerate(timesteps):
                call = StepCall(
                    denoiser_timesteps[step],
                    guided=settings.guided(step, total),
                    refresh=step % settings.deep_cache_interval == 0,
                )
                windows = settings.windows(num_frames, config.max_window, offsets[step])
                noise_pred = predict_noise(call, latents, windows)
                if on_preview is not None:
                    clean = predicted_clean(scheduler, latents, noise_pred, timestep)
                    on_preview(rearrange(clean[0], "c f h w -> f c h w"))
                latents = scheduler.step(noise_pred, timestep, latents).prev_sample
                if on_step is not None:
                    on_step(step + 1, total)
        self.denoiser.video_denoised()
        check_finite("the denoising UNet", latents)
        return latents

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


def _random_draws(
    settings: AnimationSettings,
    shape: tuple[int, ...],
    max_window: int,
    noise: torch.Tensor | None,
    offsets: list[int] | None,
) -> tuple[torch.Tensor, list[int]]:
    """The start noise ``shape`` and each step's window offset, drawn from ``settings.seed`` unless given."""
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    if noise is None:
        noise = torch.randn(shape, generator=generator)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
    if offsets is None:
        window = settings.window_length(max_window)
        offsets = torch.randint(0, window, (settings.steps,), generator=generator).tolist()
    return noise, offsets
