"""AnimatePortrait: reference IMAGE + XNEMO_MOTION → animated frames."""

import logging

import numpy as np
import torch

from xnemo_core import bundled
from xnemo_core.compiling import COMPILE_MODES
from xnemo_core.composite import paste_back
from xnemo_core.face import FaceDetector, reference_crops
from xnemo_core.motion import check_compatible
from xnemo_core.pipeline import SCHEDULES, AnimationSettings, XNeMoPipeline
from xnemo_core.sampling import SPEED_PRESETS, describe_preset

from . import comfy_bridge
from .declare import Node, Socket
from .images import to_frames, to_images
from .loader import CROP_CHOICES, MODEL, chosen_crop
from .motion import MOTION


def animate(
    model,
    reference,
    motion,
    seed,
    steps,
    cfg,
    denoise,
    schedule,
    context_frames,
    context_overlap,
    size,
    crop,
    decode_chunk,
    release_vram,
    compile="auto",
    preset="exact",
    colour_match=False,
    low_vram=False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_compatible(motion, model.motion_id, f"the loaded model '{model.name}'")
    image = to_frames(reference, "reference")[0]
    if model.is_bundled and not bundled.is_demo_portrait(image):
        logging.warning("X-NeMo: %s", bundled.OUTSIDE_ITS_WORLD)
    crops = reference_crops(image, FaceDetector() if chosen_crop(crop, model) == "detect" else None)
    if crops.note:
        logging.warning("X-NeMo: %s", crops.note)
    settings = AnimationSettings(
        steps=steps,
        guidance_scale=cfg,
        denoise=denoise,
        seed=seed,
        height=size,
        width=size,
        schedule=schedule,
        context_frames=context_frames,
        context_overlap=context_overlap,
        decode_chunk=decode_chunk,
    ).with_preset(preset)
    settings.validate(model.models.config.max_window)
    device = model.managed.make_room() if low_vram else model.managed.load()
    try:
        pipeline = XNeMoPipeline(model.models, device, offload=low_vram, compile=compile)
        animation = pipeline.animate(
            crops.portrait,
            crops.face,
            motion.tokens,
            settings,
            on_step=comfy_bridge.Progress(settings.steps - settings.skipped_steps),
        )
    finally:
        if release_vram:
            model.managed.release()
    frames = animation.video.numpy()
    pasted, mask = paste_back(image.astype(np.float32) / 255.0, frames, crops.portrait_box, colour_match=colour_match)
    return (to_images(frames), torch.from_numpy(pasted), torch.from_numpy(mask)[None])


ANIMATE_PORTRAIT = Node(
    "AnimatePortrait",
    "Animate Portrait (X-NeMo)",
    "Animate the portrait with the motion latents (official recipe by default).",
    animate,
    inputs=(
        Socket("model", MODEL, tooltip="from Load X-NeMo"),
        Socket("reference", "IMAGE", tooltip="the portrait to animate (first image of the batch)"),
        Socket("motion", MOTION, tooltip="from Extract Motion Latent, Motion Latent Blend or Load Motion Latent"),
        Socket(
            "seed",
            "INT",
            default=42,
            minimum=0,
            maximum=2**63 - 1,
            randomize=True,
            tooltip="start noise and window offsets; the same seed gives the same video on any device",
        ),
        Socket(
            "steps",
            "INT",
            default=35,
            minimum=1,
            maximum=200,
            tooltip="sampling steps of the exact preset (35 official; bundled model: 25); balanced and fast set their own",
        ),
        Socket(
            "cfg",
            "FLOAT",
            default=2.5,
            minimum=1.0,
            maximum=20.0,
            step=0.1,
            tooltip="classifier-free guidance scale (2.5 official); 1 runs without guidance, twice as fast",
        ),
        Socket(
            "denoise",
            "FLOAT",
            default=1.0,
            minimum=0.05,
            maximum=1.0,
            step=0.05,
            tooltip="fraction of the steps run; below 1 more of the portrait is kept (bundled model: 0.8)",
        ),
        Socket(
            "schedule",
            "COMBO",
            default="official",
            options=SCHEDULES,
            tooltip="context windows: official, windows shifted every step and wrapping round the clip (a loop); "
            "long, the fewest windows in order, no wrap (faster on long clips)",
        ),
        Socket(
            "context_frames",
            "INT",
            default=24,
            minimum=1,
            maximum=32,
            tooltip="frames the denoiser sees together (24 official, at most 32)",
        ),
        Socket(
            "context_overlap",
            "INT",
            default=4,
            minimum=0,
            maximum=31,
            tooltip="frames shared by neighbouring windows (4 official)",
        ),
        Socket(
            "size",
            "INT",
            default=512,
            minimum=64,
            maximum=2048,
            step=64,
            tooltip="output height and width (512 official; bundled model: 128)",
        ),
        Socket(
            "crop",
            "COMBO",
            default="auto",
            options=CROP_CHOICES,
            tooltip="detect: find the face; none: the reference is a face crop already; auto: the model's recipe "
            "(none for the bundled model, detect for the official one)",
        ),
        Socket(
            "decode_chunk",
            "INT",
            default=25,
            minimum=1,
            maximum=100,
            tooltip="25 is the official value; lower saves VRAM",
        ),
        Socket("release_vram", "BOOLEAN", default=False, tooltip="unload the model from VRAM when done"),
        Socket(
            "compile",
            "COMBO",
            default="auto",
            options=COMPILE_MODES,
            optional=True,
            tooltip="compile the denoiser (auto: on NVIDIA GPUs with Triton); the first run of a size compiles, "
            "later runs of that size are faster; off: no compilation",
        ),
        Socket(
            "preset",
            "COMBO",
            default="exact",
            options=tuple(SPEED_PRESETS),
            optional=True,
            tooltip="; ".join(f"{name}: {describe_preset(name)}" for name in SPEED_PRESETS),
        ),
        Socket(
            "colour_match",
            "BOOLEAN",
            default=False,
            optional=True,
            tooltip="give the pasted frames the colours of the original crop (per-channel Lab mean and spread)",
        ),
        Socket(
            "low_vram",
            "BOOLEAN",
            default=False,
            optional=True,
            tooltip="for 12 GB cards at 512²: other models are unloaded and only the module at work sits on the GPU "
            "(peak 6.4–7.4 GiB with decode_chunk 12); slower",
        ),
    ),
    outputs=(
        Socket("frames", "IMAGE", tooltip="the animated face crop"),
        Socket(
            "pasted_back",
            "IMAGE",
            tooltip="the frames pasted back into the full reference image through a feathered mask",
        ),
        Socket(
            "mask", "MASK", tooltip="where the frames were pasted (1 inside, soft border), for your own compositing"
        ),
    ),
)
