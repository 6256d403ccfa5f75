"""The training loop (HF accelerate: devices, DDP, mixed precision, checkpoint state).

Stage 1 trains on single frames: the reference and the target come from the same clip, the
motion encoder sees an augmented copy of the target, and the motion latent is supervised by the
diffusion loss and the dual GAN decoder. Stage 2 trains only the temporal modules, on clips.
Checkpoints are model folders in the official key layout (EMA weights), which ``load_models``
and ``LoadXNeMo`` read, plus the accelerate state to resume from.
"""

import json
import shutil
from dataclasses import KW_ONLY, asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from einops import rearrange
from torch import nn

from ..builders import build_motion_encoder
from ..convert import write_parts
from ..evaluation import cross_pairs, load_pipeline, motion_measures
from ..loading import load_models, load_vae
from ..models import XNeMoModels
from ..models.reference import capture_reference, project_reference
from ..preprocess import clip_normalize
from ..previews import fit_on_synthetic_faces
from ..sampling import OFFICIAL_SCHEDULER
from ..settings import SIZE_MULTIPLE
from ..testing.synthetic_weights import preset_models
from . import runs
from .augment import augment_driving
from .data import training_loader
from .gan import DualDiscriminator, DualMotionDecoder, discriminator_loss, generator_loss
from .runs import RunSettings

TEMPORAL_MODULES, MOTION_MODULES = "temporal_modules.", "motion_modules."
"""Key infixes of the denoiser's two kinds of frame module."""


@dataclass
class TrainConfig(RunSettings):
    """X-NeMo training (stage 1 or 2); the run settings are :class:`~xnemo_core.train.runs.RunSettings`'."""

    _: KW_ONLY
    preset: str = "tiny"
    """Model size to start from (``tiny``, ``small`` or ``official``), with rule-made weights …"""
    init_from: str | None = None
    """… or a model folder to continue from (ours or the official release)."""
    vae_from: str | None = None
    """A diffusers VAE folder (e.g. from ``train-vae``) replacing the model's VAE."""
    data: str = "synthetic"
    """``synthetic`` (the procedural face world) or a folder of face videos / frame folders."""
    synthetic_clips: int = 2000
    size: int = 64
    clip_frames: int = 8
    clip_span: int | None = None
    """Draw a clip's frames at random moments of this many source frames (stage 1: poses that
    differ between reference and target); ``None``: consecutive frames."""
    motion_guidance: str = "tokens"
    """``tokens`` (X-NeMo) or ``spatial``: train a pose-guider style comparison model instead."""
    stage: int = 1
    gan_learning_rate: float = 2e-4
    reconstruction_weight: float = 1.0
    gan_weight: float = 0.05
    condition_drop: float = 0.1
    snr_gamma: float | None = None
    """Min-SNR loss weighting (Hang et al. 2023; 5 is their choice): low-noise timesteps, which
    only refine detail, weigh less, so the model learns sooner to use the reference and the motion
    at high noise, where sampling starts. ``None``: the plain noise MSE."""
    train_motion_backbone: bool = True
    """``false``: the motion encoder's face-alignment part (up to its landmark heatmaps) keeps its
    weights, e.g. from ``pretrain-motion``; only the head that turns heatmaps into tokens learns."""
    reset_motion_modules: bool = False
    """Start the denoiser's motion modules as the identity (zero output projection), as the
    official training does: for a new motion encoder, whose tokens the old modules never learned."""
    watch_motion: bool = False
    """Log, at each checkpoint, on held-out synthetic pairs: how much of the exported motion
    encoding is identity (:func:`~xnemo_core.evaluation.motion_identity_share`; 0: none) and
    how much the denoiser relies on the motion (:func:`~xnemo_core.evaluation.motion_reliance`;
    0: it ignores it)."""
    ema_decay: float = 0.999
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = 1
    """How many resumable checkpoints (``checkpoints/step_N``) to keep, the newest; ``None``: all."""

    def validate(self) -> None:
        super().validate()
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(
                f"checkpoints_total_limit must be at least 1 (or null), got {self.checkpoints_total_limit}"
            )
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.size % SIZE_MULTIPLE:
            raise ValueError(f"size {self.size} must be a multiple of {SIZE_MULTIPLE}")
        if self.motion_guidance not in ("tokens", "spatial"):
            raise ValueError(f"motion_guidance must be 'tokens' or 'spatial', got {self.motion_guidance!r}")


def select_trained(models: XNeMoModels, config: TrainConfig) -> XNeMoModels:
    """Mark on ``models`` themselves the weights ``config`` trains and freeze the rest: stage 1 all
    but the temporal modules (and the motion encoder's backbone without ``train_motion_backbone``),
    stage 2 the denoiser's temporal modules alone, which only stage 2 runs. Call it on models the
    training owns (:func:`initial_models`'); returns them."""
    models.denoising_unet.use_temporal_modules = config.stage == 2
    models.vae.requires_grad_(False)
    models.image_encoder.requires_grad_(False)
    for part in ("motion_encoder", "reference_unet", "denoising_unet"):
        for name, parameter in getattr(models, part).named_parameters():
            temporal = TEMPORAL_MODULES in name
            parameter.requires_grad_(temporal and part == "denoising_unet" if config.stage == 2 else not temporal)
    if config.stage == 1 and models.config.motion_guidance == "tokens" and not config.train_motion_backbone:
        for parameter in models.motion_encoder.model.alignment_parameters():
            parameter.requires_grad_(False)
    return models


class XNeMoTraining(nn.Module):
    """Every network of one training step; ``forward`` returns the losses (and GAN images). It trains
    what :func:`select_trained` marked."""

    def __init__(self, models: XNeMoModels, config: TrainConfig):
        super().__init__()
        self.config = config
        self.motion_encoder = models.motion_encoder
        self.reference_unet = models.reference_unet
        self.denoising_unet = models.denoising_unet
        # The GAN decoders read motion tokens: the spatial comparison model has none.
        tokens = models.config.motion_guidance == "tokens"
        self.decoders = DualMotionDecoder() if config.stage == 1 and tokens else None
        # Frozen base parts: outside ``parameters()`` so DDP and the optimiser never see them.
        self.frozen = {"vae": models.vae, "image_encoder": models.image_encoder}
        self.scheduler = DDPMScheduler(**{k: v for k, v in OFFICIAL_SCHEDULER.items() if k != "steps_offset"})
        self.train()

    def train(self, mode: bool = True) -> "XNeMoTraining":
        """Batch norms (in the motion encoder) keep their running statistics: batches here are small."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def to_device(self, device: torch.device) -> None:
        for module in self.frozen.values():
            module.to(device).eval()

    @torch.no_grad()
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.frozen["vae"]
        return vae.encode(images.to(vae.dtype)).latent_dist.sample() * vae.config.scaling_factor

    @torch.no_grad()
    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        encoder = self.frozen["image_encoder"]
        size = encoder.config.image_size
        pixels = F.interpolate(images / 2 + 0.5, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
        return encoder(clip_normalize(pixels).to(encoder.dtype)).image_embeds[:, None]

    def _motion(self, faces: torch.Tensor) -> torch.Tensor:
        size = self.motion_encoder.face_size
        return self.motion_encoder(F.interpolate(faces, size=(size, size), mode="bilinear"))

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``frames`` ``(B, F, 3, S, S)`` in [-1, 1] (clips)."""
        batch, length = frames.shape[:2]
        rows = torch.arange(batch, device=frames.device)
        reference_index = torch.randint(0, length, (batch,), device=frames.device)
        reference = frames[rows, reference_index]
        if self.config.stage == 1:  # another frame of the clip where there is one
            shift = torch.randint(1, length, (batch,), device=frames.device) if length > 1 else 0
            targets = frames[rows, (reference_index + shift) % length][:, None]
        else:
            targets = frames
        count = targets.shape[1]
        flat_targets = targets.flatten(0, 1)
        latents, reference_latents = self._encode(flat_targets), self._encode(reference)
        clip = self._embed(reference)
        motion = self._motion(augment_driving(flat_targets))
        dropped = bool(torch.rand(()) < self.config.condition_drop)
        if dropped:  # classifier-free guidance: the unconditional rows of the official sampler
            clip = torch.zeros_like(clip)
            condition_motion = self._motion(reference).repeat_interleave(count, dim=0)
            tokens = None
        else:
            condition_motion = motion
            tokens = capture_reference(self.reference_unet, reference_latents, clip)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), device=frames.device)
        frame_timesteps = timesteps.repeat_interleave(count)
        noisy = self.scheduler.add_noise(latents, noise, frame_timesteps)
        prediction = self._denoise(
            rearrange(noisy, "(b f) c h w -> b c f h w", b=batch),
            frame_timesteps,
            clip,
            condition_motion.unflatten(0, (batch, count)),
            tokens,
        )
        losses = {"diffusion": self._diffusion_loss(prediction, noise, timesteps)}
        if self.decoders is not None:
            fakes = self.decoders(reference.repeat_interleave(count, dim=0), motion)
            reals = self.decoders.targets(flat_targets)
            losses["reconstruction"] = sum(F.l1_loss(fake, real) for fake, real in zip(fakes, reals))
            losses["fakes"], losses["reals"] = fakes, reals
        return losses

    def _diffusion_loss(self, prediction: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``prediction`` ``(B, 4, F, h, w)``, ``noise`` ``((B F), 4, h, w)``, ``timesteps`` ``(B,)``."""
        target = rearrange(noise, "(b f) c h w -> b c f h w", b=len(timesteps))
        error = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3, 4))
        if self.config.snr_gamma is None:
            return error.mean()
        snr = compute_snr(self.scheduler, timesteps)
        return (error * snr.clamp(max=self.config.snr_gamma) / snr).mean()

    def _denoise(self, noisy, timesteps, clip, motion, tokens) -> torch.Tensor:
        unet = self.denoising_unet

        def run(noisy, timesteps, clip, motion):
            reference = project_reference(unet, tokens) if tokens is not None else None
            return unet(noisy, timesteps, clip, motion, reference)

        if self.config.gradient_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(run, noisy, timesteps, clip, motion, use_reentrant=False)
        return run(noisy, timesteps, clip, motion)


def initial_models(config: TrainConfig) -> XNeMoModels:
    if config.init_from:
        models = load_models(config.init_from, dtype="fp32", allow_missing=("temporal_modules",))
    else:
        models = preset_models(config.preset, device="cpu")
        _start_frame_modules_as_identity(models.denoising_unet, TEMPORAL_MODULES)
    if config.reset_motion_modules:
        _start_frame_modules_as_identity(models.denoising_unet, MOTION_MODULES)
    if config.vae_from:  # a latent space of its own: previews need its factors
        models.vae, models.part_configs["vae"] = load_vae(config.vae_from)
        models.latent_rgb = fit_on_synthetic_faces(models.vae)
    if config.motion_guidance == "spatial" and models.config.motion_guidance != "spatial":
        models.config = models.config.with_spatial_guidance(config.size)
        models.motion_encoder = build_motion_encoder(models.config)
    return models


def _start_frame_modules_as_identity(unet: nn.Module, kind: str) -> None:
    """Zero the output projections of the ``kind`` (``TEMPORAL_MODULES`` or ``MOTION_MODULES``) frame modules.

    Also how rule-made temporal modules start: a stage-1 export samples with temporal modules
    that stage 1 neither runs nor trains, and rule-made weights there would act untrained."""
    for name, module in unet.named_modules():
        if name.endswith("temporal_transformer.proj_out") and kind in name:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)


def train(config: TrainConfig, on_log=None) -> Path:
    """Run (or resume) training; returns the last exported model folder."""
    from diffusers.training_utils import EMAModel

    output, accelerator = runs.start(config)
    models = select_trained(initial_models(config), config)
    network = XNeMoTraining(models, config)
    network.to_device(accelerator.device)
    trainable = [p for p in network.parameters() if p.requires_grad]
    ema = EMAModel(trainable, decay=config.ema_decay, foreach=True)
    network, loader = accelerator.prepare(network, training_loader(config))
    parts = [runs.optimisation(accelerator, config, trainable)]
    discriminator = None
    if accelerator.unwrap_model(network).decoders is not None:
        discriminator = accelerator.prepare(DualDiscriminator())
        parts.append(
            runs.optimisation(
                accelerator, config, discriminator.parameters(), config.gan_learning_rate, betas=(0.5, 0.99)
            )
        )
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)
    log = runs.RunLog(output / "log.jsonl", on_log)
    exported = output / "model"
    modules = [network] + ([discriminator] if discriminator is not None else [])

    def losses(batch):
        found = network(batch["frames"])
        record = {"diffusion": found["diffusion"]}
        if discriminator is None:
            return [found["diffusion"]], record | {"loss": found["diffusion"]}
        adversarial = generator_loss(accelerator.unwrap_model(discriminator), found["fakes"])
        loss = (
            found["diffusion"]
            + config.reconstruction_weight * found["reconstruction"]
            + config.gan_weight * adversarial
        )
        critic = discriminator_loss(discriminator, found["reals"], found["fakes"])
        return [loss, critic], record | {
            "loss": loss,
            "reconstruction": found["reconstruction"],
            "gan": adversarial,
            "critic": critic,
        }

    for step, record in runs.updates(accelerator, config, loader, modules, parts, losses, _resume(accelerator, output)):
        ema.step(trainable)
        if runs.due(step, config.log_every, config):
            # Read back only here: a GPU sync every step would stall the host's queueing.
            log.write({"step": step, "stage": config.stage} | {k: v.item() for k, v in record.items()})
        if runs.due(step, config.checkpoint_every, config):
            exported = _checkpoint(accelerator, output, step, ema, trainable, models, config)
            if config.watch_motion and accelerator.is_main_process:
                log.write({"step": step} | _motion_watch(exported, config.size, accelerator.device))
    log.close()
    return exported


def _motion_watch(folder: Path, size: int, device: torch.device) -> dict[str, float]:
    pipeline, pairs = load_pipeline(folder, str(device)), cross_pairs(4, 4, size)
    return motion_measures(pipeline, pairs)


CHECKPOINTS = "checkpoints"
"""Resumable states, one folder per checkpoint: ``checkpoints/step_<N>`` (accelerate state + progress)."""


def _checkpoint_folders(output: Path) -> list[Path]:
    """Resumable checkpoints, oldest first."""
    folders = (output / CHECKPOINTS).glob("step_*")
    return sorted((f for f in folders if (f / "progress.json").is_file()), key=lambda f: int(f.name.split("_")[1]))


def _resume(accelerator, output: Path) -> int:
    saved = _checkpoint_folders(output)
    if not saved:
        return 0
    accelerator.load_state(str(saved[-1]))
    return json.loads((saved[-1] / "progress.json").read_text())["step"]


def _checkpoint(accelerator, output: Path, step: int, ema, trainable, models: XNeMoModels, config) -> Path:
    """The resumable state as ``checkpoints/step_<step>`` (keeping the newest ``checkpoints_total_limit``)
    and the EMA weights exported as the model folder ``model/``."""
    accelerator.wait_for_everyone()
    folder = output / "model"
    if accelerator.is_main_process:
        state = output / CHECKPOINTS / f"step_{step}"
        accelerator.save_state(str(state))
        (state / "progress.json").write_text(json.dumps({"step": step, "config": asdict(config)}))
        if config.checkpoints_total_limit is not None:
            for old in _checkpoint_folders(output)[: -config.checkpoints_total_limit]:
                shutil.rmtree(old)
        ema.store(trainable)
        ema.copy_to(trainable)
        write_parts(models, folder, overwrite=True)
        ema.restore(trainable)
    return folder
