"""Research commands: ``train``, ``train-vae``, ``pretrain-motion``, ``evaluate`` and ``check-fixtures``."""

from pathlib import Path

from ..choices import SPEED_PRESETS


def add_training(commands) -> None:
    """The three training commands' flags."""
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


def _train(args) -> int:
    from tqdm import tqdm

    from ..train.landmarks import LandmarkConfig, pretrain_motion_encoder
    from ..train.runs import read_settings
    from ..train.trainer import TrainConfig, train
    from ..train.vae import VAETrainConfig, train_vae

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


def add_evaluate(commands) -> None:
    """The ``evaluate`` command's flags."""
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


def _evaluate(args) -> int:
    import os

    from .. import evaluation as ev
    from ..devices import resolve_device

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


def add_check_fixtures(commands) -> None:
    """The ``check-fixtures`` command's flags."""
    fixtures = commands.add_parser("check-fixtures", help="parity with the official code's golden outputs")
    fixtures.add_argument("directory")
    fixtures.add_argument("--tag", default="golden")
    fixtures.set_defaults(run=_check_fixtures)


def _check_fixtures(args) -> int:
    from ..testing import check_fixtures

    return check_fixtures.main([args.directory, "--tag", args.tag])
