"""``animate``: a portrait animated with the face motion of a driving video or a saved motion."""

import sys
from functools import partial
from pathlib import Path

from .. import bundled, recipes
from ..choices import (
    COMPILE_MODES,
    CROP_MODES,
    DEFAULT_SEED,
    PRECISIONS,
    SAMPLER_NAMES,
    SCHEDULES,
    SPEED_PRESETS,
    describe_preset,
)

SETTING_NAMES = (
    "size",
    "steps",
    "cfg",
    "denoise",
    "seed",
    "schedule",
    "context_frames",
    "context_overlap",
    "window_batch",
    "decode_chunk",
    "sampler",
    "guidance_until",
    "deep_cache_interval",
)
"""The animate flags that become sampling settings (unset ones: the preset's, then the model's recipe)."""
SETTING_FLAGS = {"guidance_scale": "--cfg", "height": "--size", "width": "--size", "context_frames": "--context"}


def add_animate(commands) -> None:
    """The ``animate`` command's flags."""
    animate = commands.add_parser("animate", help="animate a portrait with the face motion of a video")
    animate.add_argument("--models", type=Path, help="model folder or bundle file (default: the bundled model)")
    animate.add_argument("--reference", type=Path, help="portrait image (default: the bundled demo portrait)")
    animate.add_argument("--driving", type=Path, help="driving video or folder of frames (default: the demo clip)")
    animate.add_argument(
        "--motion", type=Path, help="a saved motion file (.safetensors, from Save Motion Latent) instead of --driving"
    )
    animate.add_argument("--audio", action="store_true", help="keep the driving video's sound in the output video")
    animate.add_argument("--out", type=Path, required=True, help="output .mp4 or .gif, or a folder for PNG frames")
    animate.add_argument(
        "--preset",
        choices=SPEED_PRESETS,
        default="exact",
        help="; ".join(f"{name}: {describe_preset(name)}" for name in SPEED_PRESETS).replace("%", "%%")
        + " (README: Speed presets); the flags below override a preset's values",
    )
    official, own = recipes.OFFICIAL, bundled.MODEL_SETTINGS
    animate.add_argument(
        "--steps", type=int, help=f"sampling steps (default {official['steps']}; bundled model: {own['steps']})"
    )
    animate.add_argument("--sampler", choices=SAMPLER_NAMES, help="default ddim (official)")
    animate.add_argument(
        "--guidance-until", type=float, help="fraction of the steps run with guidance, the first ones (default 1)"
    )
    animate.add_argument(
        "--deep-cache-interval",
        type=int,
        help="run the whole denoiser every N steps, reusing its deep features between (default 1: off)",
    )
    animate.add_argument("--cfg", type=float, help=f"classifier-free guidance scale (default {official['cfg']})")
    animate.add_argument(
        "--denoise",
        type=float,
        help=f"fraction of the schedule run (default {official['denoise']:g}; bundled model: {own['denoise']})",
    )
    animate.add_argument("--seed", type=int, help=f"default {DEFAULT_SEED}")
    animate.add_argument(
        "--size",
        type=int,
        help=f"output height and width, multiple of 64 (default {official['size']}; bundled: {own['size']})",
    )
    animate.add_argument("--frames", type=int, help="use at most this many driving frames")
    animate.add_argument("--dtype", choices=PRECISIONS, help="default: fp16 on CUDA, fp32 on CPU")
    animate.add_argument("--device", help="default: cuda if available, else cpu")
    animate.add_argument("--schedule", choices=SCHEDULES, help=f"default {SCHEDULES[0]}")
    animate.add_argument(
        "--context",
        dest="context_frames",
        type=int,
        help=f"context window length (default {recipes.OFFICIAL_CONTEXT_FRAMES} official, the model's limit long)",
    )
    animate.add_argument(
        "--context-overlap",
        type=int,
        help=f"frames shared by neighbouring windows (default {official['context_overlap']})",
    )
    animate.add_argument("--window-batch", type=int, help="context windows per denoiser call (default 1)")
    animate.add_argument(
        "--decode-chunk",
        type=int,
        help=f"frames per VAE decode ({official['decode_chunk']} official; lower saves memory)",
    )
    animate.add_argument(
        "--crop",
        choices=CROP_MODES,
        help=f"'none': inputs are face crops (default {official['crop']}; bundled model: {own['crop']})",
    )
    animate.add_argument(
        "--face-index",
        type=int,
        help="the driving video's face to follow, 0 = first from the left where it appears (default: the largest)",
    )
    animate.add_argument("--face-model", type=Path, help="YuNet .onnx or BlazeFace .tflite (default: OpenCV Haar)")
    animate.add_argument("--offload", action="store_true", help="keep once-run modules on the CPU")
    animate.add_argument(
        "--tiny-decoder",
        type=Path,
        metavar="PATH",
        help="decode with TAESD instead of the VAE, frame by frame and much faster, for some quality: ComfyUI's "
        "models/vae_approx/taesd_decoder.safetensors or a diffusers AutoencoderTiny folder (official latent only)",
    )
    animate.add_argument(
        "--paste-back",
        action="store_true",
        help="write the frames pasted back into the whole reference image (feathered) instead of the face crop",
    )
    animate.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="auto",
        help="compile the denoiser and wait for it (auto: on CUDA with Triton, for clips of 600 frames or more, "
        "which pay the minutes of compilation back)",
    )
    animate.set_defaults(run=_animate)


def _animate(args) -> int:
    from .. import distributed
    from ..devices import resolve_device
    from ..layouts import check_parts
    from ..portrait import animation_settings

    demo = _fill_inputs(args)
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    recipe = recipes.recommended(args.models)
    crop = args.crop or ("none" if demo else recipe["crop"])  # the demo media are face crops already
    settings = animation_settings(recipe, args.preset, **{name: getattr(args, name) for name in SETTING_NAMES})
    _check_animate_output(args)
    device = resolve_device(args.device)
    if not args.models.exists():
        raise FileNotFoundError(f"model not found: {args.models}")
    check_parts(args.models)
    with distributed.joined(device) as (device, lead):
        return _animate_on(device, lead, settings, recipe, crop, args)


def _check_animate_output(args) -> None:
    """The output: a known kind, creatable, and none of the inputs, the model or the pack's files."""
    from ..video import VIDEO_SUFFIXES, check_output, has_sound

    inputs = [path for path in (args.reference, args.driving, args.motion, args.models) if path is not None]
    untouchable = [bundled.BUNDLED] + ([args.models] if args.models.is_dir() else [])
    check_output(args.out, inputs, untouchable)
    if args.audio and (args.motion is not None or args.out.suffix.lower() not in VIDEO_SUFFIXES):
        raise ValueError("--audio copies the driving video's sound: it needs --driving and a video --out (.mp4, ...)")
    if args.audio and not has_sound(args.driving):
        raise ValueError(f"--audio: {args.driving} has no sound to keep")


def _flag_notes(args, crop: str, device) -> list[str]:
    """What the user should hear about flags that do nothing, or cost much, here."""
    notes = []
    if crop == "none" and args.face_index is not None:
        notes.append("--face-index has no effect with --crop none (the inputs are used as face crops)")
    if crop == "none" and args.face_model is not None:
        missing = "" if args.face_model.is_file() else f" (and {args.face_model} does not exist)"
        notes.append(f"--face-model has no effect with --crop none{missing}")
    if device.type == "cpu" and args.dtype in ("fp16", "bf16"):
        notes.append(f"--dtype {args.dtype} on a CPU runs several times slower than fp32 (the default there)")
    if device.type == "cpu" and args.compile == "on":
        notes.append("--compile on a CPU spends minutes compiling before the first frame, for little or no gain")
    return notes


def _animate_on(device, lead: bool, settings, recipe: dict, crop: str, args) -> int:
    """The animation on ``device``; the ``lead`` process (the only one, or rank 0 under torchrun)
    reports and writes the video."""
    from tqdm import tqdm

    from ..compiling import compile_wanted, one_video_mode
    from ..devices import default_precision
    from ..face import detector_for, driving_crops
    from ..loading import load_models
    from ..motion import check_compatible, load_motion
    from ..pipeline import XNeMoPipeline
    from ..tiny_decoder import load_tiny_decoder
    from ..portrait import Portrait, animate_portrait, check_host_memory, describe_run
    from ..video import old_frames, read_frames, read_portrait, write_video

    say = partial(print, file=sys.stderr) if lead else lambda *_: None
    for note in _flag_notes(args, crop, device):
        say(f"note: {note}")
    precision = args.dtype or default_precision(device)
    detector = detector_for(crop, args.face_model)
    reference, reference_note = read_portrait(args.reference)
    if args.motion is not None:
        saved = load_motion(args.motion)
        motion_tokens, fps, faces = saved.tokens[: args.frames], saved.fps or bundled.DEMO_FPS, None
    else:
        driving, fps = read_frames(args.driving, args.frames)
        faces = driving_crops(driving, detector, args.face_index)
    num_frames = len(motion_tokens) if faces is None else len(faces.faces)
    compile_mode = one_video_mode(args.compile, num_frames, device)
    say(
        describe_run(
            args.models, recipe, settings, args.preset, device, precision, compile_wanted(compile_mode, device)
        )
    )
    check_host_memory(settings, num_frames, reference.shape[0] * reference.shape[1], _decoder_width(args, device))
    portrait = Portrait.of(reference, detector, bundled_model=args.models == bundled.MODEL)
    for note in [reference_note, *portrait.notes, faces and faces.note]:
        if note:
            say(f"note: {note}")
    decoder = load_tiny_decoder(args.tiny_decoder) if args.tiny_decoder else None  # small: checked before the model
    models = load_models(args.models, dtype=precision)
    pipeline = XNeMoPipeline(models, device=device, offload=args.offload, compile=compile_mode, decoder=decoder)
    if faces is None:
        check_compatible(saved, models.stored_motion_id, f"the model {args.models}")
    else:
        motion_tokens = pipeline.encode_motion(faces.faces)
    steps = settings.steps - settings.skipped_steps
    with tqdm(total=steps, desc="denoising", unit="step", disable=not lead) as bar:
        animation = animate_portrait(pipeline, portrait, motion_tokens, settings, on_step=lambda *_: bar.update())
    if animation.frames is None:  # not the lead process of a process group
        return 0
    if stale := old_frames(args.out):
        say(f"note: replaced the {len(stale)} frames of an earlier run in {args.out}")
    frames = animation.pasted if args.paste_back else animation.frames
    audio = args.driving if args.audio else None
    print(f"wrote {write_video(args.out, frames, fps, audio_from=audio)}")
    return 0


def _decoder_width(args, device) -> int:
    """Channels of the VAE decoder's full-size layers where it runs on the CPU (0 on a GPU)."""
    from ..loading import part_config

    vae = part_config(args.models, "vae") or {}
    return vae.get("block_out_channels", [0])[0] if device.type == "cpu" else 0


def _fill_inputs(args) -> bool:
    """The bundled model and demo media where none are given; returns whether the demo media are used."""
    if args.motion is not None and args.driving is not None:
        raise ValueError("give --driving (a video to take the motion from) or --motion (a saved motion), not both")
    demo = args.reference is None and args.driving is None and args.motion is None
    args.reference = args.reference or bundled.DEMO_PORTRAIT
    if args.motion is None:
        args.driving = args.driving or bundled.DEMO_DRIVING
    args.models = args.models or bundled.MODEL
    return demo
