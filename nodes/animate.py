"""AnimatePortrait: reference IMAGE + XNEMO_MOTION → animated frames."""

import logging

import torch

from xnemo_core import bundled, memory
from xnemo_core.face import detector_for
from xnemo_core.motion import check_compatible
from xnemo_core.pipeline import XNeMoPipeline
from xnemo_core.portrait import Portrait, animate_portrait, animation_settings
from xnemo_core.recipes import OFFICIAL, crop_mode, recommended
from xnemo_core.sampling import SPEED_PRESETS, preset_settings

from . import comfy_bridge
from .declare import Node, Socket
from .images import to_frames, to_images
from .loader import CROP_CHOICES, MODEL_TYPE
from .motion import MOTION_TYPE
from .options import CONTEXT_TYPE, SPEED_TYPE, sampling_choices
from .previews import LivePreview

BUNDLED = recommended(bundled.MODEL)
PRESETS_WITH_STEPS = [name for name in SPEED_PRESETS if "steps" in preset_settings(name)]


def animate(
    model,
    reference,
    motion,
    seed,
    steps,
    cfg,
    denoise,
    size,
    crop,
    decode_chunk,
    release_vram,
    colour_match=False,
    low_vram=False,
    context_options=None,
    speed_options=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_compatible(motion, model.motion_id, f"the loaded model '{model.name}'")
    detector = detector_for(crop_mode(crop, model.recipe))
    portrait = Portrait.of(to_frames(reference, "reference")[0], detector, bundled_model=model.is_bundled)
    for note in portrait.notes:
        logging.warning("X-NeMo: %s", note)
    preset, compile, chosen = sampling_choices(context_options, speed_options)
    recipe_or_preset = {"steps": steps, "size": size, "denoise": denoise}  # 0: the model's recipe (or the preset's)
    settings = animation_settings(
        model.recipe,
        preset,
        model.models.config.max_window,
        **{name: value or None for name, value in recipe_or_preset.items()},
        seed=seed,
        cfg=cfg,
        decode_chunk=decode_chunk,
        **chosen,
    )
    offload, compile = fit_to_gpu(model, settings, len(motion.tokens), low_vram, compile)
    device = model.managed.make_room() if offload else model.managed.load()
    try:
        pipeline = XNeMoPipeline(model.models, device, offload=offload, compile=compile)
        preview = LivePreview.for_model(model)
        progress = comfy_bridge.Progress(settings.steps - settings.skipped_steps, preview)
        animation = animate_portrait(
            pipeline, portrait, motion.tokens, settings, colour_match, on_step=progress, on_preview=preview
        )
    finally:
        if release_vram:
            model.managed.release()
    mask = torch.from_numpy(animation.mask)[None]
    return (to_images(animation.frames), torch.from_numpy(animation.pasted), mask)


def fit_to_gpu(model, settings, frames: int, low_vram: bool, compile: str) -> tuple[bool, str]:
    """``(offload, compile mode)`` for this run of ``frames`` frames on ComfyUI's device: the model
    stays on the GPU where it fits beside the run's largest stage, else its modules visit one at a
    time (as ``low_vram``); ``auto`` compiles in the background only where a second run has room."""
    device = comfy_bridge.torch_device()
    if device.type != "cuda":
        return low_vram, compile
    working = memory.working_bytes(settings, model.models.config, frames, model.models.denoising_unet.dtype.itemsize)
    fitted = memory.fit(model.managed.size, comfy_bridge.total_memory(device), working, low_vram, compile)
    if fitted.offload and not low_vram:
        logging.warning(
            "X-NeMo: the model (%.1f GiB) and this run (%.1f GiB) do not fit the GPU together: its modules visit "
            "the GPU one at a time, as with low_vram",
            model.managed.size / 2**30,
            working / 2**30,
        )
    return fitted.offload, fitted.compile


ANIMATE_PORTRAIT = Node(
    "AnimatePortrait",
    "Animate Portrait (X-NeMo)",
    "Animate the portrait with the motion latents (official recipe by default). X-NeMo Context Options and "
    "X-NeMo Speed Options plug in for the rarely touched settings; the progress bar previews the frames being "
    "sampled (ComfyUI's preview setting; animated where VideoHelperSuite's animated previews are on).",
    animate,
    inputs=(
        Socket("model", MODEL_TYPE, tooltip="from Load X-NeMo"),
        Socket("reference", "IMAGE", tooltip="the portrait to animate (first image of the batch)"),
        Socket("motion", MOTION_TYPE, tooltip="from Extract Motion Latent, Motion Latent Blend or Load Motion Latent"),
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
            default=0,
            minimum=0,
            maximum=200,
            tooltip=f"sampling steps; 0: the preset's ({', '.join(PRESETS_WITH_STEPS)}), else the model's recipe "
            f"({OFFICIAL['steps']} official, {BUNDLED['steps']} for the bundled model)",
        ),
        Socket(
            "cfg",
            "FLOAT",
            default=OFFICIAL["cfg"],
            minimum=1.0,
            maximum=20.0,
            step=0.1,
            tooltip=f"classifier-free guidance scale ({OFFICIAL['cfg']} official); 1 runs without guidance, twice as fast",
        ),
        Socket(
            "denoise",
            "FLOAT",
            default=0.0,
            minimum=0.0,
            maximum=1.0,
            step=0.05,
            tooltip=f"fraction of the steps run; below 1 more of the portrait is kept; 0: the model's recipe "
            f"({OFFICIAL['denoise']:g} official, {BUNDLED['denoise']} for the bundled model)",
        ),
        Socket(
            "size",
            "INT",
            default=0,
            minimum=0,
            maximum=2048,
            step=64,
            tooltip=f"output height and width; 0: the model's recipe ({OFFICIAL['size']} official, "
            f"{BUNDLED['size']} for the bundled model)",
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
            default=OFFICIAL["decode_chunk"],
            minimum=1,
            maximum=100,
            tooltip=f"frames per VAE decode ({OFFICIAL['decode_chunk']} official); lower saves VRAM, changes the "
            "frames slightly",
        ),
        Socket("release_vram", "BOOLEAN", default=False, tooltip="unload the model from VRAM when done"),
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
            tooltip="other models are unloaded and only the module at work sits on the GPU; slower. Chosen by "
            "itself when the model and the run do not fit the GPU together",
        ),
        Socket(
            "context_options",
            CONTEXT_TYPE,
            optional=True,
            tooltip="from X-NeMo Context Options: how the clip is cut into windows (default: the official windows)",
        ),
        Socket(
            "speed_options",
            SPEED_TYPE,
            optional=True,
            tooltip="from X-NeMo Speed Options: a speed preset, sampler overrides, compilation (default: exact, "
            "compile auto)",
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
