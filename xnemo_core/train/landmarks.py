"""Face-alignment pretraining of the motion encoder.

The official motion encoder is a face-alignment network (FAN) before X-NeMo trains it: its
features already describe where the eyes, brows, mouth and jaw are, which is motion, and say
little about colours or backgrounds, which are identity. A motion encoder trained from random
weights together with the diffusion model has no such prior; ours learned an encoding that was
mostly appearance and that the denoiser then ignored. This step gives the small encoder the same
start: its heatmap layer learns the synthetic world's landmarks (:func:`~xnemo_core.synthetic.landmarks`).

The result is the ``init_from`` model folder with the new encoder in place, ready for stage 1
(``TrainConfig.train_motion_backbone: false`` keeps the alignment part as pretrained).
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..convert import write_parts
from ..loading import build_motion_encoder, load_models
from ..synthetic import LANDMARKS, landmarks, random_identity, random_motion_clip, render
from . import runs
from .augment import augment_driving
from .data import single_threaded_worker, to_tensor


@dataclass
class LandmarkConfig:
    output_dir: str
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
    token_spread: float = 0.25
    """Standard deviation the new tokens start with across faces (see :func:`calibrate_token_head`)."""
    mixed_precision: str = "no"
    log_every: int = 50
    seed: int = 0
    num_workers: int = 0


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


@torch.no_grad()
def calibrate_token_head(encoder: nn.Module, faces: torch.Tensor, spread: float) -> None:
    """Rescale the new token head so that, over ``faces``, its output is centred with standard
    deviation ``spread`` (data-dependent initialisation). Freshly initialised, the head's tokens
    hardly vary from face to face (spread about 0.002): a denoiser sees constant tokens, gives
    them no gradient, and they stay constant."""
    projection = encoder.final_proj
    raw = encoder(faces) - encoder.pe
    mean, scale = raw.flatten(1).mean(dim=0), spread / raw.std(dim=0).mean()
    projection.weight.mul_(scale)
    projection.bias.sub_(mean).mul_(scale)


class _Alignment(nn.Module):
    """The backbone's heatmap part as a module's ``forward``, which accelerate wraps (DDP, autocast)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.backbone.heatmaps(faces)


def pretrain_motion_encoder(config: LandmarkConfig, on_log=None) -> Path:
    """Train a new motion encoder's heatmaps on synthetic landmarks; returns the written model folder."""
    output, accelerator = runs.start(config.output_dir, config.mixed_precision, config.seed)
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
    optimizer = torch.optim.AdamW([p.requires_grad_() for p in trained], lr=config.learning_rate)
    loader = DataLoader(
        LandmarkFrames(config.steps * config.batch_size * accelerator.num_processes, config.size, config.seed),
        config.batch_size,
        num_workers=config.num_workers,
        worker_init_fn=single_threaded_worker,
    )
    alignment, optimizer, loader = accelerator.prepare(alignment, optimizer, loader)
    alignment.train()
    log = runs.RunLog(output / "log.jsonl", on_log)
    for step, batch in enumerate(loader, start=1):
        faces = F.interpolate(augment_driving(batch["frames"]), size=encoder.face_size, mode="bilinear")
        predicted = alignment(faces)
        target = gaussian_heatmaps(batch["landmarks"], predicted.shape[-1], config.sigma)
        loss = heatmap_loss(predicted.float(), target, config.foreground_weight)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % config.log_every == 0 or step == config.steps:
            log.write(
                {"step": step, "loss": loss.item(), "peak_error": peak_error(predicted, batch["landmarks"]).item()}
            )
    log.close()
    models.motion_encoder = encoder.cpu().eval()
    calibrate_token_head(models.motion_encoder, faces.cpu(), config.token_spread)
    folder = output / "model"
    write_parts(models, folder)
    return folder
