"""Face-alignment pretraining of the motion encoder.

The official motion encoder is a face-alignment network (FAN) before X-NeMo trains it: its
features already describe where the eyes, brows, mouth and jaw are, which is motion, and say
little about colours or backgrounds, which are identity. A motion encoder trained from random
weights together with the diffusion model has no such prior; ours learned an encoding that was
mostly appearance and that the denoiser then ignored. This step gives the small encoder the same
start: its heatmap layer learns the synthetic world's landmarks (:func:`~xnemo_core.synthetic.landmarks`).

The result is the ``init_from`` model folder with the new encoder in place, its token head
started from the data (:func:`calibrate_token_head`), ready for stage 1
(``TrainConfig.train_motion_backbone: false`` keeps the alignment part as pretrained,
``reset_motion_modules: true`` lets the denoiser learn the new tokens afresh).
"""

import dataclasses
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..builders import build_motion_encoder
from ..convert import write_parts
from ..loading import load_models
from ..synthetic import LANDMARKS, landmarks, random_identity, random_motion_clip, render
from . import runs
from .augment import augment_driving
from .data import SyntheticFaces, single_threaded_worker, to_tensor
from .runs import RunSettings


@dataclass
class LandmarkConfig(RunSettings):
    """A new motion encoder's landmark pretraining; the run settings are :class:`~xnemo_core.train.runs.RunSettings`'."""

    _: KW_ONLY
    init_from: str
    """The model folder whose motion encoder is replaced by a pretrained one."""
    face_size: int | None = None
    """The new encoder's input size; ``None``: the old encoder's."""
    size: int = 128
    """Render size of the synthetic faces (the encoder resizes them to ``face_size``)."""
    sigma: float = 1.0
    """Heatmap Gaussians' width, in heatmap pixels."""
    foreground_weight: float = 20.0
    """How much more the squared error counts at a landmark's peak than on the background."""
    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 1e-3
    token_spread: float = 0.5
    """Standard deviation the new tokens start with across one person's expressions (see
    :func:`calibrate_token_head`)."""
    calibration_people: int = 1024
    """How many people (4 frames each) the token head's calibration sees."""
    log_every: int = 50


class LandmarkFrames(Dataset):
    """Single synthetic frames (a random person at a random moment of a performance) with landmarks."""

    def __init__(self, length: int, size: int, seed: int = 0):
        self.length, self.size, self.seed = length, size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index, 3])
        identity = random_identity(rng)
        performance = random_motion_clip(rng, 250)
        motion = performance[rng.integers(len(performance))]
        return {
            "frames": to_tensor(render(identity, motion, self.size)[None])[0],
            "landmarks": torch.from_numpy(landmarks(identity, motion)),
        }


def gaussian_heatmaps(points: torch.Tensor, resolution: int, sigma: float) -> torch.Tensor:
    """``points`` ``(N, K, 2)`` x, y as fractions of the image → ``(N, K, R, R)`` peaks of 1."""
    grid = torch.arange(resolution, device=points.device, dtype=points.dtype) + 0.5
    x, y = (points[..., i, None] * resolution for i in range(2))
    across = torch.exp(-((grid - x) ** 2) / (2 * sigma**2))
    down = torch.exp(-((grid - y) ** 2) / (2 * sigma**2))
    return down[..., :, None] * across[..., None, :]


def heatmap_loss(predicted: torch.Tensor, target: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """Squared error weighted up near the landmarks: plain MSE is smallest, early on, for empty
    heatmaps (landmarks cover a few pixels), and training stalls there."""
    return ((predicted - target) ** 2 * (1 + foreground_weight * target)).mean()


def peak_error(heatmaps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Mean distance in heatmap pixels between each heatmap's maximum and its landmark."""
    resolution = heatmaps.shape[-1]
    index = heatmaps.flatten(2).argmax(dim=2)
    peaks = torch.stack([index % resolution, index // resolution], dim=-1).to(points.dtype) + 0.5
    return (peaks - points * resolution).norm(dim=-1).mean()


def calibration_clips(people: int, size: int, seed: int, frames: int = 4) -> torch.Tensor:
    """``(people, frames, 3, size, size)``: moments of each person's performance, every clip
    augmented as the driving input is in training, alike across its frames (so that augmentation
    counts as a difference between people, not as motion)."""
    world = SyntheticFaces(people, frames, size, seed=seed, span=250)
    return torch.stack([_augmented_alike(world[index]["frames"], seed=index) for index in range(people)])


def _augmented_alike(frames: torch.Tensor, seed: int) -> torch.Tensor:
    """``frames`` ``(F, 3, S, S)``, each augmented with the same random draw."""
    return torch.cat([augment_driving(frame[None], torch.Generator().manual_seed(seed)) for frame in frames])


@torch.no_grad()
def calibrate_token_head(
    encoder: nn.Module, clips: torch.Tensor, spread: float, directions: int = 16, shrinkage: float = 0.1
) -> torch.Tensor:
    """Restart the token head (``final_proj``) so that its tokens vary with motion, not with identity.

    ``clips`` ``(C, F, 3, S, S)`` hold several frames of each of ``C`` people. Over their head
    inputs this finds the ``directions`` feature directions in which frames of one person vary
    most relative to how people differ (linear discriminant analysis with the roles swapped:
    within-clip scatter against between-clip scatter, the latter shrunk towards its mean variance),
    and spreads them over the 512 token channels with a fixed random rotation, so that each token
    channel varies within a clip with standard deviation ``spread``.

    A freshly initialised head hardly varies from face to face (about 0.002), and what varies is
    mostly identity, which differs far more between people than one person's expressions do: a
    denoiser that cross-attends to such tokens sees no motion, never gives them a gradient, and
    they stay constant. Returns the motion-to-identity variance ratio of each kept direction.
    """
    people, frames = clips.shape[:2]
    size = encoder.face_size
    faces = F.interpolate(clips.flatten(0, 1), size=(size, size), mode="bilinear")
    features = torch.cat([encoder.fused_features(chunk) for chunk in faces.split(64)]).double()
    features = features.unflatten(0, (people, frames))
    means = features.mean(dim=1)
    motion = features - means[:, None]
    within = torch.einsum("cfi,cfj->ij", motion, motion) / (people * frames)
    between = torch.cov(means.T)
    between += shrinkage * between.diagonal().mean() * torch.eye(len(between), dtype=between.dtype)
    lower = torch.linalg.cholesky(between)
    inverse = torch.linalg.solve_triangular(lower, torch.eye(len(lower), dtype=lower.dtype), upper=False)
    ratios, vectors = torch.linalg.eigh(inverse @ within @ inverse.T)
    ratios, vectors = ratios[-directions:].flip(0), vectors[:, -directions:].flip(1)
    axes = inverse.T @ vectors  # feature directions, each of unit between-clip variance
    whitened = axes / (axes.T @ within @ axes).diagonal().sqrt()  # unit within-clip variance
    channels = encoder.final_proj.out_features
    generator = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(channels, directions, generator=generator, dtype=whitened.dtype))
    weight = spread * (channels / directions) ** 0.5 * rotation @ whitened.T
    projection = encoder.final_proj
    projection.weight.copy_(weight)
    projection.bias.copy_(-weight @ features.flatten(0, 1).mean(dim=0))
    return ratios.float()


class _Alignment(nn.Module):
    """The backbone's heatmap part as a module's ``forward``, which accelerate wraps (DDP, autocast)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.backbone.heatmaps(faces)


def pretrain_motion_encoder(config: LandmarkConfig, on_log=None) -> Path:
    """Train a new motion encoder's heatmaps on synthetic landmarks; returns the written model folder."""
    output, accelerator = runs.start(config)
    models = load_models(config.init_from, dtype="fp32")
    if models.config.motion_guidance != "tokens":
        raise ValueError(f"{config.init_from}: a {models.config.motion_guidance} model has no motion encoder")
    sizes = {**models.config.motion_encoder, "landmarks": LANDMARKS}
    if config.face_size:
        sizes["face_size"] = config.face_size
    models.config = dataclasses.replace(models.config, motion_encoder=sizes)
    encoder = build_motion_encoder(models.config)
    trained = encoder.model.alignment_parameters()
    encoder.requires_grad_(False)  # DDP refuses parameters that get no gradient (the token head)
    alignment = _Alignment(encoder.model)
    loader = DataLoader(
        LandmarkFrames(config.samples_per_process * accelerator.num_processes, config.size, config.seed),
        config.batch_size,
        num_workers=config.num_workers,
        worker_init_fn=single_threaded_worker,
    )
    alignment, loader = accelerator.prepare(alignment, loader)
    part = runs.optimisation(accelerator, config, [p.requires_grad_() for p in trained])
    alignment.train()
    log = runs.RunLog(output / "log.jsonl", on_log)

    def losses(batch):
        faces = F.interpolate(augment_driving(batch["frames"]), size=encoder.face_size, mode="bilinear")
        predicted = alignment(faces)
        target = gaussian_heatmaps(batch["landmarks"], predicted.shape[-1], config.sigma)
        loss = heatmap_loss(predicted.float(), target, config.foreground_weight)
        return [loss], {"loss": loss, "peak_error": peak_error(predicted.detach(), batch["landmarks"])}

    for step, record in runs.updates(accelerator, config, loader, [alignment], [part], losses):
        if runs.due(step, config.log_every, config):
            log.write({"step": step} | {k: v.item() for k, v in record.items()})
    models.motion_encoder = encoder.cpu().eval()
    clips = calibration_clips(config.calibration_people, config.size, config.seed + 1)
    ratios = calibrate_token_head(models.motion_encoder, clips, config.token_spread)
    log.write({"step": config.steps, "motion_to_identity_variance": [round(r, 3) for r in ratios.tolist()]})
    log.close()
    folder = output / "model"
    write_parts(models, folder, overwrite=True)
    return folder
