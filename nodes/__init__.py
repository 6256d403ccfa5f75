"""The ComfyUI nodes: thin wrappers of ``xnemo_core``; motion latents flow as ``XNEMO_MOTION``."""

from .animate import AnimatePortrait
from .comfy_bridge import register_model_folder
from .loader import LoadXNeMo
from .motion import ExtractMotionLatent, LoadMotionLatent, MotionLatentBlend, SaveMotionLatent

register_model_folder()

NODE_CLASS_MAPPINGS = {
    "LoadXNeMo": LoadXNeMo,
    "ExtractMotionLatent": ExtractMotionLatent,
    "AnimatePortrait": AnimatePortrait,
    "MotionLatentBlend": MotionLatentBlend,
    "SaveMotionLatent": SaveMotionLatent,
    "LoadMotionLatent": LoadMotionLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadXNeMo": "Load X-NeMo",
    "ExtractMotionLatent": "Extract Motion Latent (X-NeMo)",
    "AnimatePortrait": "Animate Portrait (X-NeMo)",
    "MotionLatentBlend": "Motion Latent Blend (X-NeMo)",
    "SaveMotionLatent": "Save Motion Latent (X-NeMo)",
    "LoadMotionLatent": "Load Motion Latent (X-NeMo)",
}
