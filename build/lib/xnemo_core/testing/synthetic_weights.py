"""Deterministic weights from a state-dict key and shape alone (the parity fixtures' rule).

They let anyone rebuild the exact weights the golden fixtures were made with, and give full-size
models realistic activation scales for benchmarks, without the real checkpoints.
"""

import math
import zlib

import torch
from torch import nn

from ..builders import build_image_encoder, build_motion_encoder, build_vae
from ..checkpoints import load_into
from ..choices import MODEL_SIZES
from ..config import CLIP_IMAGE_ENCODER, SMALL_VAE, SVD_VAE, TINY_CLIP_IMAGE_ENCODER, TINY_VAE, XNeMoConfig
from ..models import XNeMoModels
from ..models.reference import ReferenceUNet
from ..models.unet3d import DenoisingUNet

PRESETS = dict(
    zip(
        MODEL_SIZES,
        (
            (XNeMoConfig.tiny, TINY_CLIP_IMAGE_ENCODER, TINY_VAE),
            (XNeMoConfig.small, TINY_CLIP_IMAGE_ENCODER, SMALL_VAE),
            (XNeMoConfig.official, CLIP_IMAGE_ENCODER, SVD_VAE),
        ),
        strict=True,
    )
)

GAINS = {"final_proj.weight": 0.03, "conv_out.weight": 0.05}


def synthesize(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The fixture rule for one tensor (see ``docs/fixtures.md``)."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    t = torch.randn(shape, generator=generator, dtype=torch.float32) * GAINS.get(name, 1.0)
    if name.endswith("running_var"):
        return 1 + 0.1 * t.abs()
    if name.endswith("running_mean"):
        return 0.1 * t
    if len(shape) >= 2:
        return t / math.sqrt(math.prod(shape[1:]))
    if name.endswith("weight"):
        return 1 + 0.1 * t
    return 0.02 * t


def synthesized_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and BatchNorm running statistic of ``module``, by the fixture rule.

    Other buffers (computed position tables, BatchNorm counters) are left to the module.
    """
    names = [name for name, _ in module.named_parameters()]
    names += [name for name, _ in module.named_buffers() if name.endswith(("running_mean", "running_var"))]
    shapes = module.state_dict(keep_vars=True)
    return {name: synthesize(name, tuple(shapes[name].shape)) for name in names}


def with_synthesized_weights(module: nn.Module, label: str) -> nn.Module:
    """Load the rule's weights into ``module`` (built on any device, meta included); eval mode."""
    load_into(module, [(label, synthesized_state_dict(module))], what=label)
    return module.eval()


def synthesized_models(
    config: XNeMoConfig, clip_config: dict, vae_config: dict, device: str | torch.device = "meta"
) -> XNeMoModels:
    """Every part at the given sizes with the rule's weights, on the CPU.

    The UNets and the VAE are built on ``device`` first (``meta`` skips their random
    initialisation); the motion encoder and CLIP hold computed buffers, so they are built on the CPU.
    """
    with torch.device(device):
        parts = {
            "reference_unet": ReferenceUNet(**config.unet),
            "denoising_unet": DenoisingUNet(config.unet, config.frame_modules),
            "vae": build_vae(vae_config),
        }
    parts.update(motion_encoder=build_motion_encoder(config), image_encoder=build_image_encoder(clip_config))
    for name, module in parts.items():
        with_synthesized_weights(module, name.replace("_", " ")).requires_grad_(False)
    return XNeMoModels(config=config, **parts, part_configs={"image_encoder": clip_config, "vae": vae_config})


def preset_models(preset: str, device: str | torch.device = "meta") -> XNeMoModels:
    """``tiny`` (tests), ``small`` (the shipped model's sizes, to train) or ``official``
    (benchmarks) sizes with the rule's weights."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config, clip_config, vae_config = PRESETS[preset]
    return synthesized_models(config(), clip_config, vae_config, device)
