"""X-NeMo's networks (one module each) and :class:`XNeMoModels`, the set of them a pipeline runs."""

from dataclasses import dataclass, field

from diffusers import AutoencoderKLTemporalDecoder
from torch import nn
from transformers import CLIPVisionModelWithProjection

from ..config import XNeMoConfig
from ..motion import MotionEncoderId
from ..previews import LatentRGB
from .motion_encoder import MotionEncoder
from .reference import ReferenceUNet
from .spatial_guider import SpatialMotionGuider
from .unet3d import DenoisingUNet

PARTS = ("motion_encoder", "reference_unet", "denoising_unet", "image_encoder", "vae")


@dataclass
class XNeMoModels:
    """Every network of the pipeline, with the configs needed to rebuild them."""

    config: XNeMoConfig
    motion_encoder: MotionEncoder | SpatialMotionGuider
    reference_unet: ReferenceUNet
    denoising_unet: DenoisingUNet
    image_encoder: CLIPVisionModelWithProjection | None = None
    vae: AutoencoderKLTemporalDecoder | None = None
    part_configs: dict = field(default_factory=dict)
    stored_motion_id: MotionEncoderId | None = None
    """Fingerprint of the motion encoder's weights as stored, taken at load before any cast."""
    recipe: dict = field(default_factory=dict)
    """What the model's files say of its recommended recipe (:mod:`~xnemo_core.recipes`), kept by conversion."""
    latent_rgb: LatentRGB | None = None
    """Preview factors of the model's own VAE latent space (:mod:`~xnemo_core.previews`); ``None``:
    Stable Diffusion's latent, as the official model's."""

    @property
    def motion_id(self) -> MotionEncoderId:
        """What motion latents this model accepts (see :class:`~xnemo_core.motion.MotionEncoderId`)."""
        if self.stored_motion_id is None:
            self.stored_motion_id = MotionEncoderId.of(self.motion_encoder)
        return self.stored_motion_id

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}

    def to(self, device=None, dtype=None) -> "XNeMoModels":
        for module in self.modules().values():
            # Plain nn.Module.to: diffusers' override warns about fp32 modules on every cast.
            nn.Module.to(module, device=device, dtype=dtype)
        return self
