"""Training a small VAE of the SVD kind (``AutoencoderKLTemporalDecoder``: per-frame encoder,
temporal decoder) for models of our own size, where the official SVD VAE is far too large.

``init_from`` continues from a VAE; with ``train_encoder: false`` only the decoder learns, so the
latent space (and any diffusion model trained on it) stays valid. Decoding is trained on whole
clips and, for ``single_frame_fraction`` of the steps, frame by frame, as short chunks are
decoded at the end of a video.

The result is a diffusers folder (``config.json`` + weights) that ``TrainConfig.vae_from`` and the
official folder layout (``stable-video-diffusion-img2vid-xt/vae``) take. Its ``scaling_factor`` is
measured after training so that scaled latents have unit variance, as the diffusion model expects.
"""

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder

from ..config import SVD_VAE
from ..loading import load_vae
from . import runs
from .data import training_loader
from .runs import RunSettings


@dataclass
class VAETrainConfig(RunSettings):
    """A small SVD-style VAE's training; the run settings are :class:`~xnemo_core.train.runs.RunSettings`'."""

    _: KW_ONLY
    data: str = "synthetic"
    size: int = 128
    clip_frames: int = 4
    synthetic_clips: int = 4000
    steps: int = 3000
    batch_size: int = 8
    learning_rate: float = 2e-4
    kl_weight: float = 1e-6
    single_frame_fraction: float = 0.25
    init_from: str | None = None
    """A diffusers VAE folder or a model folder whose VAE to continue from."""
    train_encoder: bool = True
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    layers_per_block: int = 1
    log_every: int = 50

    def vae_config(self) -> dict:
        return {
            **SVD_VAE,
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "sample_size": self.size,
        }


def train_vae(config: VAETrainConfig, on_log=None) -> Path:
    """Train (or continue); returns the diffusers folder written to ``output_dir/vae``."""
    output, accelerator = runs.start(config)
    vae = (
        load_vae(config.init_from)[0].train()
        if config.init_from
        else AutoencoderKLTemporalDecoder(**config.vae_config())
    )
    vae.requires_grad_(True)
    if not config.train_encoder:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    vae, loader = accelerator.prepare(vae, training_loader(config))
    part = runs.optimisation(accelerator, config, [p for p in vae.parameters() if p.requires_grad])
    log = runs.RunLog(output / "vae_log.jsonl", on_log)

    def losses(batch):
        frames = batch["frames"].flatten(0, 1)
        posterior = vae.encode(frames).latent_dist
        frame_by_frame = bool(torch.rand(()) < config.single_frame_fraction)
        decoded = vae.decode(posterior.sample(), num_frames=1 if frame_by_frame else config.clip_frames).sample
        reconstruction = F.l1_loss(decoded.float(), frames)
        kl = posterior.kl().mean()
        return [reconstruction + config.kl_weight * kl], {"reconstruction": reconstruction, "kl": kl}

    for step, record in runs.updates(accelerator, config, loader, [vae], [part], losses):
        if runs.due(step, config.log_every, config):
            log.write({"step": step} | {k: v.item() for k, v in record.items()})
    log.close()
    vae = accelerator.unwrap_model(vae).eval()
    if config.train_encoder:
        vae.register_to_config(scaling_factor=_unit_variance_scale(vae, loader))
    folder = output / "vae"
    vae.save_pretrained(folder)
    return folder


@torch.no_grad()
def _unit_variance_scale(vae, loader, batches: int = 8) -> float:
    latents = []
    for index, batch in enumerate(loader):
        if index == batches:
            break
        frames = batch["frames"].flatten(0, 1).to(next(vae.parameters()).device)
        latents.append(vae.encode(frames).latent_dist.mean.float().flatten())
    return float(1 / torch.cat(latents).std())
