"""Each part of a model built from its config, weights not loaded (random, or on the meta device)."""

import torch
from diffusers import AutoencoderKLTemporalDecoder
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from .checkpoints import CheckpointError
from .config import XNeMoConfig
from .models.motion_encoder import MotionEncoder
from .models.reference import ReferenceUNet
from .models.spatial_guider import SpatialMotionGuider
from .models.unet3d import DenoisingUNet


def build_motion_encoder(config: XNeMoConfig) -> MotionEncoder | SpatialMotionGuider:
    """The part that reads the driving face: X-NeMo's motion encoder, or a comparison model's guider."""
    if config.motion_guidance == "spatial":
        return SpatialMotionGuider(**config.motion_encoder)
    if config.motion_guidance != "tokens":
        raise CheckpointError(f"unknown motion_guidance {config.motion_guidance!r} in the model config")
    return MotionEncoder(**config.motion_encoder)


def build_unet(part: str, config: XNeMoConfig) -> nn.Module:
    """``reference_unet`` or ``denoising_unet``, on the current default device."""
    if part == "reference_unet":
        return ReferenceUNet(**config.unet)
    return DenoisingUNet(config.unet, config.frame_modules)


def build_image_encoder(config: dict) -> CLIPVisionModelWithProjection:
    fields = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**fields))


def build_vae(config: dict) -> AutoencoderKLTemporalDecoder:
    with torch.device("meta"):
        return AutoencoderKLTemporalDecoder(**{k: v for k, v in config.items() if not k.startswith("_")})


BASE_PARTS = {"image_encoder": (build_image_encoder, "CLIP image encoder"), "vae": (build_vae, "VAE")}
"""The optional parts taken from the base models: builder and name for messages."""
