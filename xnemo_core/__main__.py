"""Command line: ``python -m xnemo_core {animate,convert,synthesize,check-fixtures,train,train-vae,pretrain-motion,evaluate} ...``."""

import argparse
import os
import sys
from functools import partial
from pathlib import Path

from tqdm import tqdm

from . import bundled, check_fixtures, distributed, recipes
from .compiling import COMPILE_MODES
from .convert import check_output, write_bundle, write_parts
from .devices import default_precision, resolve_device
from .face import CROP_MODES, FaceDetector, driving_crops, reference_crops
from .loading import DTYPES, load_models
from .pipeline import SCHEDULES, AnimationSettings, SettingError, XNeMoPipeline
from .sampling import SAMPLERS, SPEED_PRESETS, describe_preset, preset_settings
from .synthetic_weights import PRESETS, preset_models
from .video import old_frames, output_kind, read_frames, read_image, write_video

SETTING_FLAGS = {
    "guidance_scale": "--cfg",
    "height": "--size",
    "width": "--size",
    "context_frames": "--context",
    "context_overlap": "--context-overlap",
}


def _animate(args) -> int:
    _fill_defaults(args)
    settings = _settings(args)
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    output_kind(args.out)
    with distributed.joined(resolve_device(args.device)) as (device, lead):
        return _animate_on(device, lead, settings, args)


def _animate_on(device, lead: bool, settings: AnimationSettings, args) -> int:
    """The animation on ``device``; the ``lead`` process (the only one, or rank 0 under torchrun)
    reports and writes the video."""
    say = partial(print, file=sys.stderr) if lead else lambda *_: None
    detector = FaceDetector(args.face_model) if args.crop == "detect" else None
    reference = read_image(args.reference)
    driving, fps = read_frames(args.driving, args.frames)
    if args.models == bundled.MODEL and not bundled.is_demo_portrait(reference):
        say(f"warning: {bundled.OUTSIDE_ITS_WORLD}")
    faces = driving_crops(driving, detector, args.face_index)
    crops = reference_crops(reference, detector)
    if crops.note:
        say(f"note: {crops.note}")
    if faces.undetected:
        say(f"note: no face in {len(faces.undetected)} driving frames; neighbouring boxes reused")
    models = load_models(args.models, dtype=args.dtype or default_precision(device))
    settings.validate(models.config.max_window)
    pipeline = XNeMoPipeline(models, device=device, offload=args.offload, compile=args.compile)
    motion = pipeline.encode_motion(faces.faces)
    steps = settings.steps - settings.skipped_steps
    with tqdm(total=steps, desc="denoising", unit="step", disable=not lead) as bar:
        animation = pipeline.animate(crops.portrait, crops.face, motion, settings, on_step=lambda *_: bar.update())
    if not lead:
        return 0
    if stale := old_frames(args.out):
        say(f"note: replaced the {len(stale)} frames of an earlier run in {args.out}")
    print(f"wrote {write_video(args.out, animation.video.numpy(), fps)}")
    return 0


def _settings(args) -> AnimationSettings:
    """The sampling settings of the flags, checked before any work."""
    settings = AnimationSettings(
        steps=args.steps,
        guidance_scale=args.cfg,
        denoise=args.denoise,
        seed=args.seed,
        height=args.size,
        width=args.size,
        schedule=args.schedule,
        context_frames=args.context,
        context_overlap=args.context_overlap,
        window_batch=args.window_batch,
        decode_chunk=args.decode_chunk,
        sampler=args.sampler,
        guidance_until=args.guidance_until,
        deep_cache_interval=args.deep_cache_interval,
    )
    settings.validate()
    return settings


def _fill_defaults(args) -> None:
    """Unset options: the speed preset's, then the model's recommended recipe (the bundled model's
    own, the official one for any other), with the bundled model and demo media where none are
    given. The demo media are face crops already, whatever the model."""
    demo = args.reference is None and args.driving is None
    args.reference = args.reference or bundled.DEMO_PORTRAIT
    args.driving = args.driving or bundled.DEMO_DRIVING
    args.models = args.models or bundled.MODEL
    defaults = recipes.recommended(args.models)
    if demo:
        defaults = defaults | {"crop": bundled.MODEL_SETTINGS["crop"]}
    defaults = defaults | preset_settings(args.preset)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _synthesize(args) -> int:
    check_output(args.out, args.bundle, args.force)
    models = preset_models(args.preset)
    written = _write(models, args)
    print(f"wrote {len(written)} file(s) of a {args.preset}-size model with synthesized (untrained) weights:")
    for path in written:
        print(f"  {path}")
    return 0


def _convert(args) -> int:
    check_output(args.out, args.bundle, args.force)
    models = load_models(args.models, dtype=args.dtype, allow_missing=tuple(args.allow_missing))
    for path in _write(models, args):
        print(f"wrote {path}")
    return 0


def _write(models, args) -> list[Path]:
    if args.bundle:
        return [write_bundle(models, args.out, overwrite=args.force)]
    return write_parts(models, args.out, overwrite=args.force)


def _train(args) -> int:
    from .train.landmarks import LandmarkConfig, pretrain_motion_encoder
    from .train.trainer import TrainConfig, read_settings, train
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
    from .train import evaluate as ev

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


def _labels(paths: list[Path]) -> list[str]:
    """The shortest path endings that tell the paths apart (``run_a/model``, ``run_b/model``)."""
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xnemo_core")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="write safetensors with the configs embedded")
    convert.add_argument("models", type=Path, help="model folder (official layout) or bundle file")
    convert.add_argument("out", type=Path, help="output folder, or output file with --bundle")
    convert.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
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

    fixtures = commands.add_parser("check-fixtures", help="parity with the official code's golden outputs")
    fixtures.add_argument("directory")
    fixtures.add_argument("--tag", default="golden")
    fixtures.set_defaults(run=lambda a: check_fixtures.main([a.directory, "--tag", a.tag]))

    animate = commands.add_parser("animate", help="animate a portrait with the face motion of a video")
    animate.add_argument("--models", type=Path, help="model folder or bundle file (default: the bundled model)")
    animate.add_argument("--reference", type=Path, help="portrait image (default: the bundled demo portrait)")
    animate.add_argument("--driving", type=Path, help="driving video or folder of frames (default: the demo clip)")
    animate.add_argument("--out", type=Path, required=True, help="output .mp4 or .gif, or a folder for PNG frames")
    animate.add_argument(
        "--preset",
        choices=SPEED_PRESETS,
        default="exact",
        help="; ".join(f"{name}: {describe_preset(name)}" for name in SPEED_PRESETS).replace("%", "%%")
        + " (README: Speed presets); the flags below override a preset's values",
    )
    animate.add_argument("--steps", type=int, help="sampling steps (default 35; bundled model: 25)")
    animate.add_argument("--sampler", choices=SAMPLERS, help="default ddim (official)")
    animate.add_argument(
        "--guidance-until", type=float, help="fraction of the steps run with guidance, the first ones (default 1)"
    )
    animate.add_argument(
        "--deep-cache-interval",
        type=int,
        help="run the whole denoiser every N steps, reusing its deep features between (default 1: off)",
    )
    animate.add_argument("--cfg", type=float, default=2.5, help="classifier-free guidance scale")
    animate.add_argument("--denoise", type=float, help="fraction of the schedule run (default 1; bundled model: 0.8)")
    animate.add_argument("--seed", type=int, default=42)
    animate.add_argument("--size", type=int, help="output height and width, multiple of 64 (default 512; bundled: 128)")
    animate.add_argument("--frames", type=int, help="use at most this many driving frames")
    animate.add_argument("--dtype", choices=sorted(DTYPES), help="default: fp16 on CUDA, fp32 on CPU")
    animate.add_argument("--device", help="default: cuda if available, else cpu")
    animate.add_argument("--schedule", choices=SCHEDULES, default="official")
    animate.add_argument("--context", type=int, help="context window length (default 24 official, 32 long)")
    animate.add_argument("--context-overlap", type=int, default=4, help="frames shared by neighbouring windows")
    animate.add_argument("--window-batch", type=int, default=1, help="context windows per denoiser call")
    animate.add_argument(
        "--decode-chunk", type=int, default=25, help="frames per VAE decode (25 official; lower saves memory)"
    )
    animate.add_argument(
        "--crop", choices=CROP_MODES, help="'none': inputs are face crops (default detect; bundled model: none)"
    )
    animate.add_argument(
        "--face-index",
        type=int,
        help="the driving video's face to follow, 0 = first from the left where it appears (default: the largest)",
    )
    animate.add_argument("--face-model", type=Path, help="YuNet .onnx or BlazeFace .tflite (default: OpenCV Haar)")
    animate.add_argument("--offload", action="store_true", help="keep once-run modules on the CPU")
    animate.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="auto",
        help="compile the denoiser (auto: on CUDA with Triton; the first video of a size pays the compilation)",
    )
    animate.set_defaults(run=_animate)

    synthesize = commands.add_parser("synthesize", help="write an untrained model with rule-made weights")
    synthesize.add_argument("out", type=Path, help="output folder, or output file with --bundle")
    synthesize.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
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
        training.set_defaults(run=_train)

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
    evaluation.set_defaults(run=_evaluate)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SettingError as error:
        print(
            f"error: {SETTING_FLAGS.get(error.setting, '--' + error.setting.replace('_', '-'))}: {error}",
            file=sys.stderr,
        )
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
