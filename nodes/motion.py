"""Motion latent nodes: extract from driving frames, blend / edit, save and load."""

from pathlib import Path

import torch

from xnemo_core import motion as core
from xnemo_core.face import boxes_drawn, detector_for, driving_crops
from xnemo_core.files import OutsideFolderError, inside
from xnemo_core.pipeline import XNeMoPipeline
from xnemo_core.recipes import crop_mode

from . import comfy_bridge
from .declare import Node, Socket
from .images import to_frames, to_images
from .loader import CROP_CHOICES, MODEL_TYPE

MOTION_TYPE = "XNEMO_MOTION"
NO_MOTIONS = "(save a motion, or put motion .safetensors in the input folder)"
OUTPUT_MARK = " [output]"
"""ComfyUI's annotation of a file in the output folder (as Load Image lists results)."""
FRAME_INDEX = {"minimum": -100000, "maximum": 100000}


def extract(
    model, frames, crop: str, fps: float = 25.0, face_index: int = -1
) -> tuple[core.MotionLatent, torch.Tensor, torch.Tensor]:
    pixels = to_frames(frames, "driving frames")
    detector = detector_for(crop_mode(crop, model.recipe))
    crops = driving_crops(pixels, detector, None if face_index < 0 else face_index)
    device, offload = model.managed.place_for_one_part()
    tokens = XNeMoPipeline(model.models, device, offload=offload).encode_motion(crops.faces)
    latent = core.MotionLatent(
        tokens=tokens,
        model_id=model.motion_id.current,
        fps=fps or None,
        source_size=tuple(pixels.shape[1:3]),
        boxes=torch.from_numpy(crops.boxes).float() if detector is not None else None,
    )
    return (latent, to_images(crops.faces), to_images(boxes_drawn(pixels, crops.boxes, crops.undetected)))


BLEND_MODES = ("interpolate", "relative", "intensity", "smooth", "expression")
NEEDS_MOTION_B = ("interpolate", "relative", "expression")


def blend(
    motion_a, mode, weight, length_mode, neutral_frame, from_frame, to_frame, sigma_frames, motion_b=None
) -> tuple[core.MotionLatent]:
    if mode not in BLEND_MODES:
        raise ValueError(f"MotionLatentBlend: unknown mode {mode!r}; choose one of {', '.join(BLEND_MODES)}")
    if mode in NEEDS_MOTION_B and motion_b is None:
        raise ValueError(f"MotionLatentBlend: mode '{mode}' needs a second motion connected to motion_b")
    try:
        if mode == "interpolate":
            return (core.interpolate(motion_a, motion_b, weight, length_mode),)
        if mode == "relative":
            return (core.relative(motion_a, motion_b, weight, length_mode),)
        if mode == "intensity":
            return (core.intensity(motion_a, weight, neutral_frame),)
        if mode == "smooth":
            return (core.smooth(motion_a, sigma_frames),)
        return (core.expression_edit(motion_a, motion_b, from_frame, to_frame, weight),)
    except ValueError as error:
        raise ValueError(f"MotionLatentBlend ({mode}): {error}") from None


def save(motion, filename_prefix: str) -> dict:
    folder = comfy_bridge.directory("output")
    index = 0
    while (path := inside(folder, f"{filename_prefix}_{index:05d}.safetensors", "filename prefix")).exists():
        index += 1
    core.save_motion(motion, path)  # already checked to lie within the output folder
    return {"ui": {"text": [str(path.relative_to(folder.resolve()))]}}


def saved_motions() -> list[str]:
    """Motion files of the input folder, then those Save Motion Latent wrote (marked ``[output]``)."""
    inputs = _motion_files(comfy_bridge.directory("input"))
    outputs = [name + OUTPUT_MARK for name in _motion_files(comfy_bridge.directory("output"))]
    return inputs + outputs or [NO_MOTIONS]


def _motion_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors") if _stays_inside(folder, p))


def _stays_inside(folder: Path, path: Path) -> bool:
    try:
        inside(folder, path.relative_to(folder))
    except OutsideFolderError:
        return False
    return True


def load(file: str) -> tuple[core.MotionLatent]:
    if file.endswith(OUTPUT_MARK):
        return (core.load_motion(file.removesuffix(OUTPUT_MARK), comfy_bridge.directory("output")),)
    return (core.load_motion(file, comfy_bridge.directory("input")),)


EXTRACT_MOTION_LATENT = Node(
    "ExtractMotionLatent",
    "Extract Motion Latent (X-NeMo)",
    "Driving frames → per-frame X-NeMo motion latents (identity-free), plus the face crops used.",
    extract,
    inputs=(
        Socket("model", MODEL_TYPE, tooltip="from Load X-NeMo; a motion latent works only with this model's encoder"),
        Socket("frames", "IMAGE", tooltip="driving video frames, e.g. from Get Video Components"),
        Socket(
            "crop",
            "COMBO",
            default="auto",
            options=CROP_CHOICES,
            tooltip="detect: find the face in each frame; none: the frames are face crops already; auto: the "
            "model's recipe (none for the bundled model, detect for the official one)",
        ),
        Socket(
            "fps",
            "FLOAT",
            default=25.0,
            minimum=0.0,
            maximum=240.0,
            step=0.01,
            optional=True,
            tooltip="frame rate kept with the motion (connect Get Video Components' fps)",
        ),
        Socket(
            "face_index",
            "INT",
            default=-1,
            minimum=-1,
            maximum=31,
            optional=True,
            tooltip="which face drives when the video shows several: -1 the largest in each frame; 0, 1, … the "
            "first, second, … from the left where it first appears, then followed",
        ),
    ),
    outputs=(
        Socket("motion", MOTION_TYPE, tooltip="32 × 16 motion tokens per frame, with fps and crop boxes"),
        Socket("face_crops", "IMAGE", tooltip="the face crops the motion encoder saw"),
        Socket(
            "boxes",
            "IMAGE",
            tooltip="the driving frames with each crop box drawn: green where the face was found, orange where "
            "it was borrowed from neighbouring frames",
        ),
    ),
)
MOTION_LATENT_BLEND = Node(
    "MotionLatentBlend",
    "Motion Latent Blend (X-NeMo)",
    "Combine or edit motion latents without touching the UNet. interpolate: A→B by weight; relative: B's "
    "change since its first frame on top of A; intensity: scale A around its neutral frame; smooth: "
    "temporal smoothing of A; expression: add strength × (B[to_frame] − B[from_frame]) to A.",
    blend,
    inputs=(
        Socket("motion_a", MOTION_TYPE, tooltip="the motion to edit (sets the length)"),
        Socket(
            "mode",
            "COMBO",
            default="interpolate",
            options=BLEND_MODES,
            tooltip="interpolate A→B; relative: B's change on A; intensity: scale A; smooth A; expression: add B's "
            "to_frame − from_frame",
        ),
        Socket(
            "weight",
            "FLOAT",
            default=0.5,
            minimum=-3.0,
            maximum=3.0,
            step=0.01,
            tooltip="interpolate weight, relative / expression strength, intensity scale",
        ),
        Socket("length_mode", "COMBO", default="resample", options=core.LENGTH_MODES, tooltip="fit B to A's length"),
        Socket("neutral_frame", "INT", default=0, tooltip="intensity: A's frame taken as neutral", **FRAME_INDEX),
        Socket("from_frame", "INT", default=0, tooltip="expression: B's frame the change starts from", **FRAME_INDEX),
        Socket(
            "to_frame", "INT", default=-1, tooltip="expression: B's frame the change ends at (-1: last)", **FRAME_INDEX
        ),
        Socket(
            "sigma_frames",
            "FLOAT",
            default=2.0,
            minimum=0.0,
            maximum=50.0,
            step=0.1,
            tooltip="smooth: Gaussian width in frames",
        ),
        Socket("motion_b", MOTION_TYPE, optional=True, tooltip="the second motion (interpolate, relative, expression)"),
    ),
    outputs=(Socket("motion", MOTION_TYPE, tooltip="the blended motion"),),
)
SAVE_MOTION_LATENT = Node(
    "SaveMotionLatent",
    "Save Motion Latent (X-NeMo)",
    "Save a motion latent as .safetensors in the output folder, to share like a workflow; Load Motion "
    "Latent lists it (marked [output]) after a refresh.",
    save,
    inputs=(
        Socket("motion", MOTION_TYPE, tooltip="the motion to keep"),
        Socket(
            "filename_prefix",
            "STRING",
            default="xnemo/motion",
            tooltip="name within the output folder; a counter and .safetensors are added",
        ),
    ),
    output_node=True,
)
LOAD_MOTION_LATENT = Node(
    "LoadMotionLatent",
    "Load Motion Latent (X-NeMo)",
    "Load a motion latent .safetensors from the input folder, or one Save Motion Latent wrote ([output]).",
    load,
    inputs=(
        Socket(
            "file",
            "COMBO",
            options=saved_motions,
            tooltip="a motion .safetensors of the input folder, or of the output folder where marked [output]",
        ),
    ),
    outputs=(Socket("motion", MOTION_TYPE, tooltip="the saved motion, for the model whose encoder made it"),),
)
