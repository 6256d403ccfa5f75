"""Motion latent nodes: extract from driving frames, blend / edit, save and load."""

import torch

from xnemo_core import motion as core
from xnemo_core.face import CROP_MODES, FaceDetector, driving_crops
from xnemo_core.pipeline import XNeMoPipeline

from . import comfy_bridge
from .images import to_frames, to_images

MOTION = "XNEMO_MOTION"


class ExtractMotionLatent:
    CATEGORY = "X-NeMo"
    RETURN_TYPES = (MOTION, "IMAGE")
    RETURN_NAMES = ("motion", "face_crops")
    FUNCTION = "extract"
    DESCRIPTION = "Driving frames → per-frame X-NeMo motion latents (identity-free), plus the face crops used."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("XNEMO_MODEL",),
                "frames": ("IMAGE", {"tooltip": "driving video frames, e.g. from Get Video Components"}),
                "crop": (list(CROP_MODES), {"default": "detect", "tooltip": "'none': frames are already face crops"}),
            },
            "optional": {"fps": ("FLOAT", {"default": 25.0, "min": 0.0, "max": 240.0, "step": 0.01})},
        }

    def extract(self, model, frames, crop, fps=25.0):
        pixels = to_frames(frames, "driving frames")
        crops = driving_crops(pixels, FaceDetector() if crop == "detect" else None)
        device = model.managed.load()
        tokens = XNeMoPipeline(model.models, device).encode_motion(crops.faces)
        latent = core.MotionLatent(
            tokens=tokens,
            model_id=model.motion_id,
            fps=fps or None,
            source_size=tuple(pixels.shape[1:3]),
            boxes=torch.from_numpy(crops.boxes).float() if crop == "detect" else None,
        )
        return (latent, to_images(crops.faces))


class MotionLatentBlend:
    CATEGORY = "X-NeMo"
    RETURN_TYPES = (MOTION,)
    RETURN_NAMES = ("motion",)
    FUNCTION = "blend"
    DESCRIPTION = (
        "Combine or edit motion latents without touching the UNet. interpolate: A→B by weight; relative: B's "
        "change since its first frame on top of A; intensity: scale A around its neutral frame; smooth: "
        "temporal smoothing of A; expression: add strength × (B[to_frame] − B[from_frame]) to A."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion_a": (MOTION,),
                "mode": (list(core.BLEND_MODES) + ["expression"], {"default": "interpolate"}),
                "weight": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": -3.0,
                        "max": 3.0,
                        "step": 0.01,
                        "tooltip": "interpolate weight, relative / expression strength, intensity scale",
                    },
                ),
                "length_mode": (list(core.LENGTH_MODES), {"default": "resample", "tooltip": "fit B to A's length"}),
                "neutral_frame": ("INT", {"default": 0, "min": -100000, "max": 100000}),
                "from_frame": ("INT", {"default": 0, "min": -100000, "max": 100000}),
                "to_frame": ("INT", {"default": -1, "min": -100000, "max": 100000}),
                "sigma_frames": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 50.0, "step": 0.1}),
            },
            "optional": {"motion_b": (MOTION,)},
        }

    def blend(
        self, motion_a, mode, weight, length_mode, neutral_frame, from_frame, to_frame, sigma_frames, motion_b=None
    ):
        if mode in ("interpolate", "relative", "expression") and motion_b is None:
            raise ValueError(f"mode '{mode}' needs a second motion on motion_b")
        if mode == "interpolate":
            return (core.interpolate(motion_a, motion_b, weight, length_mode),)
        if mode == "relative":
            return (core.relative(motion_a, motion_b, weight, length_mode),)
        if mode == "intensity":
            return (core.intensity(motion_a, weight, neutral_frame),)
        if mode == "smooth":
            return (core.smooth(motion_a, sigma_frames),)
        return (core.expression_edit(motion_a, motion_b, from_frame, to_frame, weight),)


class SaveMotionLatent:
    CATEGORY = "X-NeMo"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    DESCRIPTION = "Save a motion latent as .safetensors in the output folder, to share like a workflow."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"motion": (MOTION,), "filename_prefix": ("STRING", {"default": "xnemo/motion"})}}

    def save(self, motion, filename_prefix):
        folder = comfy_bridge.directory("output")
        index = 0
        while (path := folder / f"{filename_prefix}_{index:05d}.safetensors").exists():
            index += 1
        core.save_motion(motion, path)
        return {"ui": {"text": [str(path.relative_to(folder))]}}


class LoadMotionLatent:
    CATEGORY = "X-NeMo"
    RETURN_TYPES = (MOTION,)
    RETURN_NAMES = ("motion",)
    FUNCTION = "load"
    DESCRIPTION = "Load a motion latent .safetensors from the input folder."

    @classmethod
    def INPUT_TYPES(cls):
        folder = comfy_bridge.directory("input")
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors")) if folder.is_dir() else []
        return {"required": {"file": (files or ["(put motion .safetensors in the input folder)"],)}}

    def load(self, file):
        return (core.load_motion(comfy_bridge.directory("input") / file),)
