"""LoadXNeMo: a model folder or bundle from ``models/xnemo`` → ``XNEMO_MODEL``."""

from dataclasses import dataclass

from xnemo_core.loading import XNeMoModels, load_models
from xnemo_core.motion import motion_encoder_id

from . import comfy_bridge

PRECISIONS = ["auto", "fp16", "bf16", "fp32"]


@dataclass
class XNeMoModel:
    """What flows on an ``XNEMO_MODEL`` link."""

    models: XNeMoModels
    managed: comfy_bridge.ManagedModules
    motion_id: str
    name: str


class LoadXNeMo:
    CATEGORY = "X-NeMo"
    RETURN_TYPES = ("XNEMO_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    DESCRIPTION = "Loads X-NeMo (official folder layout, converted safetensors folder or bundle) from models/xnemo."

    @classmethod
    def INPUT_TYPES(cls):
        choices = sorted(comfy_bridge.model_choices()) or ["(put X-NeMo models in models/xnemo)"]
        return {
            "required": {
                "model": (choices, {"tooltip": "a folder or .safetensors bundle in models/xnemo"}),
                "precision": (PRECISIONS, {"default": "auto"}),
            }
        }

    def load(self, model: str, precision: str):
        found = comfy_bridge.model_choices()
        if model not in found:
            roots = ", ".join(str(root) for root in comfy_bridge.model_roots())
            raise FileNotFoundError(f"X-NeMo model '{model}' not found in {roots}")
        if precision == "auto":
            precision = comfy_bridge.auto_precision(comfy_bridge.torch_device())
        models = load_models(found[model], dtype=precision, device="cpu")
        managed = comfy_bridge.ManagedModules(models.modules())
        return (XNeMoModel(models, managed, motion_encoder_id(models.motion_encoder), model),)
