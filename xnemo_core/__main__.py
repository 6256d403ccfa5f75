"""Command line: ``python -m xnemo_core {animate,download,convert,synthesize,check-fixtures,train,train-vae,pretrain-motion,evaluate} ...``."""

import argparse
import errno
import signal
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from . import bundled, recipes
from .choices import (
    COMPILE_MODES,
    CROP_MODES,
    DEFAULT_SEED,
    DOWNLOAD_PARTS,
    MODEL_SIZES,
    PRECISIONS,
    SAMPLER_NAMES,
    SCHEDULES,
    SPEED_PRESETS,
    describe_preset,
)

# Torch, diffusers and OpenCV are imported inside the commands, so that --help answers at once.

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
INTERRUPTED = 130
TERMINATED = 143


def _animate(args) -> int:
    from . import distributed
    from .devices import resolve_device
    from .layouts import check_parts
    from .portrait import animation_settings

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
    from .video import VIDEO_SUFFIXES, check_output, has_sound

    inputs = [path for path in (args.reference, args.driving, args.motion, args.models) if path is not None]
    untouchable = [bundled.BUNDLED] + ([args.models] if args.models.is_dir() else [])
    check_output(args.out, inputs, untouchable)
    if args.audio and (args.motion is not None or args.out.suffix.lower() not in VIDEO_SUFFIXES):
        raise ValueError("--audio copies the driving video's sound: it needs --driving and a video --out (.mp4, ...)")
    if args.audio and not has_sound(args.driving):
        raise ValueError(f"--audio: {args.driving} has no sound to keep")


def _flag_notes(args, crop: str) -> list[str]:
    """What the user should hear about flags that do nothing here."""
    if crop != "none":
        return []
    notes = []
    if args.face_index is not None:
        notes.append("--face-index has no effect with --crop none (the inputs are used as face crops)")
    if args.face_model is not None:
        missing = "" if args.face_model.is_file() else f" (and {args.face_model} does not exist)"
        notes.append(f"--face-model has no effect with --crop none{missing}")
    return notes


def _animate_on(device, lead: bool, settings, recipe: dict, crop: str, args) -> int:
    """The animation on ``device``; the ``lead`` process (the only one, or rank 0 under torchrun)
    reports and writes the video."""
    from tqdm import tqdm

    from .compiling import compile_wanted, one_video_mode
    from .devices import default_precision
    from .face import detector_for, driving_crops
    from .loading import load_models
    from .motion import check_compatible, load_motion
    from .pipeline import XNeMoPipeline
    from .portrait import Portrait, animate_portrait, check_host_memory, describe_run
    from .video import old_frames, read_frames, read_portrait, write_video

    say = partial(print, file=sys.stderr) if lead else lambda *_: None
    for note in _flag_notes(args, crop):
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
    say(describe_run(args.models, recipe, settings, args.preset, device, precision, compile_wanted(compile_mode, device)))
    check_host_memory(settings, num_frames, reference.shape[0] * reference.shape[1], _decoder_width(args, device))
    portrait = Portrait.of(reference, detector, bundled_model=args.models == bundled.MODEL)
    for note in [reference_note, *portrait.notes, faces and faces.note]:
        if note:
            say(f"note: {note}")
    models = load_models(args.models, dtype=precision)
    pipeline = XNeMoPipeline(models, device=device, offload=args.offload, compile=compile_mode)
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
    from .loading import part_config

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


def _synthesize(args) -> int:
    from .convert import check_output
    from .testing.synthetic_weights import preset_models

    check_output(args.out, args.bundle, args.force)
    models = preset_models(args.preset)
    written = _write(models, args)
    print(f"wrote {len(written)} file(s) of a {args.preset}-size model with synthesized (untrained) weights:")
    for path in written:
        print(f"  {path}")
    return 0


def _convert(args) -> int:
    from .convert import check_output
    from .loading import load_models

    check_output(args.out, args.bundle, args.force)
    models = load_models(args.models, dtype=args.dtype, allow_missing=tuple(args.allow_missing))
    for path in _write(models, args):
        print(f"wrote {path}")
    return 0


def _download(args) -> int:
    from .download import download

    folder, complete = download(args.dest, tuple(args.parts), args.xnemo_from, args.token, convert=args.convert)
    if complete:
        print(
            f"ready: {folder} (every part loaded strictly); animate with: python -m xnemo_core animate --models {folder}"
        )
    else:
        print(f"checked what was downloaded into {folder}; the X-NeMo files are still missing: add --parts xnemo")
    return 0


def _write(models, args) -> list[Path]:
    from .convert import write_bundle, write_parts

    if args.bundle:
        return [write_bundle(models, args.out, overwrite=args.force)]
    return write_parts(models, args.out, overwrite=args.force)


def _train(args) -> int:
    from tqdm import tqdm

    from .train.landmarks import LandmarkConfig, pretrain_motion_encoder
    from .train.runs import read_settings
    from .train.trainer import TrainConfig, train
    from .train.vae import VAETrainConfig, train_vae

    kind, run = {
        "train": (TrainConfig, train),
        "train-vae": (VAETrainConfig, train_vae),
        "pretrain-motion": (LandmarkConfig, pretrain_motion_encoder),
    }[args.command]
    overrides = dict(_setting(item) for item in args.set)
    if args.output_dir:
        overrides["output_dir"] = str(args.output_dir)
    config = read_settings(kind, args.config, **overrides)
    with tqdm(total=config.steps, desc=args.command, unit="step") as bar:

        def show(record: dict) -> None:
            bar.update(record["step"] - bar.n)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if isinstance(v, float)})

        folder = run(config, on_log=show)
    print(f"wrote {folder}")
    return 0


def _setting(item: str) -> tuple[str, object]:
    import yaml

    key, separator, value = item.partition("=")
    if not separator:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    return key, yaml.safe_load(value)


def _evaluate(args) -> int:
    import os

    from . import evaluation as ev
    from .devices import resolve_device

    device = resolve_device(args.device)
    pairs = ev.cross_pairs(args.pairs, args.frames, args.size)
    workers = (os.cpu_count() or 1) - 1
    regressor = ev.load_or_train_regressor(args.regressor, args.size, device, num_workers=workers)
    methods = {"repeat reference": ev.repeat_reference}
    pipelines = {label: ev.load_pipeline(path, device) for label, path in zip(_labels(args.models), args.models)}
    if pipelines:
        first = next(iter(pipelines))
        methods[f"truth through the VAE of {first}"] = ev.vae_roundtrip_method(pipelines[first])
    exact_of = {}
    for label, pipeline in pipelines.items():
        for preset in args.presets:
            name = label if preset == "exact" else f"{label} [{preset}]"
            methods[name] = ev.model_method(pipeline, args.steps, args.size, args.denoise, preset)
            if preset != "exact" and "exact" in args.presets:
                exact_of[name] = label
    table = ev.evaluate(methods, pairs, regressor, exact_of)
    for label, pipeline in pipelines.items():
        table[label] |= ev.motion_measures(pipeline, pairs)
    print(ev.format_table(table))
    print(f"wrote {ev.write_json(table, args.out)}")
    return 0


def _check_fixtures(args) -> int:
    from .testing import check_fixtures

    return check_fixtures.main([args.directory, "--tag", args.tag])


def _labels(paths: list[Path]) -> list[str]:
    """The shortest path endings that tell the paths apart (``run_a/model``, ``run_b/model``)."""
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xnemo_core")
    parser.set_defaults(on_interrupt="nothing was written")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="write safetensors with the configs embedded")
    convert.add_argument("models", type=Path, help="model folder (official layout) or bundle file")
    convert.add_argument("out", type=Path, help="output folder, or output file with --bundle")
    convert.add_argument("--dtype", choices=PRECISIONS, default="fp16")
    convert.add_argument("--bundle", action="store_true", help="write one .safetensors file instead of one per part")
    convert.add_argument("--force", action="store_true", help="replace files an earlier conversion wrote")
    convert.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="GROUP",
        help="weight group that may be absent, e.g. temporal_modules (kept as identity)",
    )
    convert.set_defaults(run=_convert)

    fetch = commands.add_parser(
        "download",
        help="fetch the official model (X-NeMo's files, the CLIP image encoder, the VAE) into a folder",
        description="Fetches the official model into DEST in the official layout, then loads every part strictly. "
        "Files already there are kept; an interrupted download is resumed by running the command again.",
    )
    fetch.add_argument("dest", type=Path, help="the model folder, e.g. ComfyUI/models/xnemo/xnemo")
    fetch.add_argument("--parts", nargs="+", choices=DOWNLOAD_PARTS, default=list(DOWNLOAD_PARTS))
    fetch.add_argument(
        "--xnemo-from",
        metavar="FOLDER_OR_URL",
        help="where the four xnemo_*.pth files are: a folder you downloaded them to, or a URL above them "
        "(default: the official Google Drive folder)",
    )
    fetch.add_argument(
        "--token", help="Hugging Face read token for the gated SVD VAE (default: HF_TOKEN or your login)"
    )
    fetch.add_argument(
        "--convert", action="store_true", help="then write fp16 safetensors into DEST and remove the official files"
    )
    fetch.set_defaults(run=_download, on_interrupt="run the command again to resume")

    fixtures = commands.add_parser("check-fixtures", help="parity with the official code's golden outputs")
    fixtures.add_argument("directory")
    fixtures.add_argument("--tag", default="golden")
    fixtures.set_defaults(run=_check_fixtures)

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

    synthesize = commands.add_parser("synthesize", help="write an untrained model with rule-made weights")
    synthesize.add_argument("out", type=Path, help="output folder, or output file with --bundle")
    synthesize.add_argument("--preset", choices=MODEL_SIZES, default="tiny")
    synthesize.add_argument("--bundle", action="store_true")
    synthesize.add_argument("--force", action="store_true", help="replace files written before")
    synthesize.set_defaults(run=_synthesize)

    for name, what, settings in (
        ("train", "train X-NeMo on the synthetic face world or face videos", "TrainConfig"),
        ("train-vae", "train a small SVD-style VAE for models of our own size", "VAETrainConfig"),
        ("pretrain-motion", "pretrain a new motion encoder on synthetic face landmarks", "LandmarkConfig"),
    ):
        training = commands.add_parser(name, help=what)
        training.add_argument("--config", type=Path, help=f"YAML file of training settings (see {settings})")
        training.add_argument("--output-dir", type=Path, help="where the log, state and results go")
        training.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
        training.set_defaults(run=_train, on_interrupt="the checkpoints saved so far are kept")

    evaluation = commands.add_parser("evaluate", help="cross-reenactment metrics on held-out synthetic faces")
    evaluation.add_argument("models", type=Path, nargs="*", help="model folders to compare (and the baseline)")
    evaluation.add_argument("--pairs", type=int, default=16, help="held-out (reference, driver) pairs")
    evaluation.add_argument("--frames", type=int, default=16)
    evaluation.add_argument("--size", type=int, default=64)
    evaluation.add_argument("--steps", type=int, default=25, help="sampling steps")
    evaluation.add_argument("--denoise", type=float, default=1.0, help="fraction of the sampling schedule run")
    evaluation.add_argument(
        "--presets",
        nargs="+",
        choices=SPEED_PRESETS,
        default=["exact"],
        help="speed presets to score; with exact among them, the others' frames are also compared to its (psnr_vs_exact)",
    )
    evaluation.add_argument("--device")
    evaluation.add_argument("--regressor", type=Path, default=Path("eval/regressor.pt"), help="cached or trained here")
    evaluation.add_argument("--out", type=Path, default=Path("eval/results.json"))
    evaluation.set_defaults(run=_evaluate, on_interrupt="results were not written")

    args = parser.parse_args(argv)
    try:
        with _termination_as_interrupt():
            return args.run(args)
    except KeyboardInterrupt as interrupt:
        print(f"{interrupt.args[0] if interrupt.args else 'interrupted'}; {args.on_interrupt}", file=sys.stderr)
        return TERMINATED if isinstance(interrupt, Terminated) else INTERRUPTED
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        setting = getattr(error, "setting", None)  # a SettingError names the field, said here by its flag
        flag = f"{SETTING_FLAGS.get(setting, '--' + setting.replace('_', '-'))}: " if setting else ""
        print(f"error: {flag}{error}", file=sys.stderr)
        return 2
    except OSError as error:  # what the file system refuses for a path the user gave (a name too long, ...)
        print(f"error: {_os_error_line(error)}", file=sys.stderr)
        return 2


def _os_error_line(error: OSError) -> str:
    if error.errno == errno.ENAMETOOLONG:
        return f"{error.filename}: a name in this path is longer than the file system allows; choose a shorter one"
    return f"{error.filename or 'a file'}: {error.strerror or error}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every write in progress removes its temporary file."""


@contextmanager
def _termination_as_interrupt():
    def terminate(*_):
        raise Terminated("terminated")

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
