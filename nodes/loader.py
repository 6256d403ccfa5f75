"""LoadXNeMo: a model folder or bundle from ``models/xnemo`` → ``XNEMO_MODEL``."""

from dataclasses import dataclass, field

from xnemo_core import bundled, recipes
from xnemo_core.config import SVD_VAE
from xnemo_core.face import CROP_MODES
from xnemo_core.loading import load_models, part_config
from xnemo_core.models import XNeMoModels
from xnemo_core.motion import MotionEncoderId

from . import comfy_bridge
from .comfy_parts import ComfyImageEncoder, ComfyVAE
from .declare import Node, Socket

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
MODEL_TYPE = "XNEMO_MODEL"
NO_MODELS = "(put X-NeMo models in models/xnemo)"


@dataclass
class LoadedXNeMo:
    """What flows on an ``XNEMO_MODEL`` link."""

    models: XNeMoModels
    managed: comfy_bridge.ManagedModules
    motion_id: MotionEncoderId
    name: str
    is_bundled: bool = False
    """The bundled synthetic-world model (warns when it animates other images)."""
    recipe: dict = field(default_factory=lambda: dict(recipes.OFFICIAL))
    """The model's recommended recipe (:mod:`xnemo_core.recipes`): what ``auto`` and 0 pick."""


CROP_CHOICES = (recipes.AUTO, *CROP_MODES)


def model_dropdown() -> list[str]:
    return sorted(comfy_bridge.model_choices()) or [NO_MODELS]


def load(model: str, precision: str, vae=None, clip_vision=None) -> tuple[LoadedXNeMo]:
    found = comfy_bridge.model_choices()
    if model not in found:
        roots = ", ".join(str(root) for root in comfy_bridge.model_roots())
        raise FileNotFoundError(
            f"X-NeMo model '{model}' not found in {roots}: fetch it with the Download X-NeMo Model node, or put "
            "a model folder or .safetensors bundle there"
        )
    if precision == "auto":
        precision = comfy_bridge.auto_precision(comfy_bridge.torch_device())
    supplied = {"vae": vae, "image_encoder": clip_vision}
    models = load_models(found[model], dtype=precision, device="cpu", skip=tuple(k for k, v in supplied.items() if v))
    if clip_vision is not None:
        models.image_encoder = ComfyImageEncoder(clip_vision, models.config.unet["cross_attention_dim"])
    if vae is not None:
        replaced = part_config(found[model], "vae") or SVD_VAE
        models.vae = ComfyVAE(vae, models.config.unet["in_channels"], replaced["scaling_factor"])
    managed = comfy_bridge.ManagedModules(models.modules())
    path = found[model]
    return (LoadedXNeMo(models, managed, models.motion_id, model, path == bundled.MODEL, recipes.recommended(path)),)


LOAD_XNEMO = Node(
    "LoadXNeMo",
    "Load X-NeMo",
    "Loads X-NeMo (official folder layout, converted safetensors folder or bundle) from models/xnemo. "
    "A VAE or CLIP vision model from ComfyUI's loaders replaces the model's own.",
    load,
    inputs=(
        Socket("model", "COMBO", options=model_dropdown, tooltip="a folder or .safetensors bundle in models/xnemo"),
        Socket(
            "precision",
            "COMBO",
            default="auto",
            options=PRECISIONS,
            tooltip="auto: what ComfyUI picks for the device (bf16 or fp16 on most GPUs), fp32 on a CPU",
        ),
        Socket("vae", "VAE", optional=True, tooltip="e.g. the Stable Video Diffusion VAE (temporal decoder)"),
        Socket("clip_vision", "CLIP_VISION", optional=True, tooltip="the CLIP ViT-L/14 image encoder"),
    ),
    outputs=(Socket("model", MODEL_TYPE, tooltip="to Extract Motion Latent and Animate Portrait"),),
)
