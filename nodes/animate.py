"""AnimatePortrait: reference IMAGE + XNEMO_MOTION → animated frames."""

import numpy as np
import torch

from xnemo_core.face import CROP_MODES, FaceDetector, paste_back, reference_crops
from xnemo_core.motion import check_compatible
from xnemo_core.pipeline import SCHEDULES, AnimationSettings, XNeMoPipeline

from . import comfy_bridge
from .images import to_frames, to_images
from .motion import MOTION


class AnimatePortrait:
    CATEGORY = "X-NeMo"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("frames", "pasted_back")
    FUNCTION = "animate"
    DESCRIPTION = "Animate the portrait with the motion latents (official recipe by default)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("XNEMO_MODEL",),
                "reference": ("IMAGE", {"tooltip": "the portrait to animate (first image of the batch)"}),
                "motion": (MOTION,),
                "seed": ("INT", {"default": 42, "min": 0, "max": 2**63 - 1}),
                "steps": ("INT", {"default": 35, "min": 1, "max": 200}),
                "cfg": ("FLOAT", {"default": 2.5, "min": 1.0, "max": 20.0, "step": 0.1}),
                "schedule": (list(SCHEDULES), {"default": "official"}),
                "context_frames": ("INT", {"default": 24, "min": 1, "max": 32}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": 31}),
                "size": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64}),
                "crop": (list(CROP_MODES), {"default": "detect", "tooltip": "'none': the reference is a face crop"}),
                "decode_chunk": (
                    "INT",
                    {"default": 25, "min": 1, "max": 100, "tooltip": "25 is the official value; lower saves VRAM"},
                ),
                "release_vram": ("BOOLEAN", {"default": False}),
            }
        }

    def animate(
        self,
        model,
        reference,
        motion,
        seed,
        steps,
        cfg,
        schedule,
        context_frames,
        context_overlap,
        size,
        crop,
        decode_chunk,
        release_vram,
    ):
        check_compatible(motion, model.motion_id, f"the loaded model '{model.name}'")
        image = to_frames(reference, "reference")[0]
        crops = reference_crops(image, FaceDetector() if crop == "detect" else None)
        settings = AnimationSettings(
            steps=steps,
            guidance_scale=cfg,
            seed=seed,
            height=size,
            width=size,
            schedule=schedule,
            context_frames=context_frames,
            context_overlap=context_overlap,
            decode_chunk=decode_chunk,
        )
        settings.validate(model.models.config.max_window)
        device = model.managed.load()
        try:
            pipeline = XNeMoPipeline(model.models, device)
            animation = pipeline.animate(
                crops.portrait, crops.face, motion.tokens, settings, on_step=comfy_bridge.Progress(steps)
            )
        finally:
            if release_vram:
                model.managed.release()
        frames = animation.video.numpy()
        pasted = paste_back(image.astype(np.float32) / 255.0, frames, crops.portrait_box)
        return (to_images(frames), torch.from_numpy(pasted))
