"""Model files: ``download`` the official model, ``convert`` a model to safetensors, ``synthesize``
a model with rule-made weights."""

from pathlib import Path

from ..choices import DOWNLOAD_EXTRAS, DOWNLOAD_PARTS, MODEL_SIZES, PRECISIONS


def add_download(commands) -> None:
    """The ``download`` command's flags."""
    fetch = commands.add_parser(
        "download",
        help="fetch the official model (X-NeMo's files, the CLIP image encoder, the VAE) into a folder",
        description="Fetches the parts DEST lacks (in the official layout, or converted with --convert), asking "
        "every source first, then loads every part DEST holds strictly. Parts already there, in either form, are "
        "kept and not fetched again; a stopped run keeps what it received, and the same command resumes it.",
    )
    fetch.add_argument("dest", type=Path, help="the model folder, e.g. ComfyUI/models/xnemo/xnemo")
    fetch.add_argument(
        "--parts",
        nargs="+",
        choices=DOWNLOAD_PARTS + DOWNLOAD_EXTRAS,
        default=list(DOWNLOAD_PARTS),
        help="default: the model's three; tiny_decoder: TAESD (MIT licence, 10 MB), for animate --tiny-decoder",
    )
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
    fetch.set_defaults(
        run=_download,
        on_interrupt="the bytes received (hidden .partial files) and the files fetched are kept: "
        "the same command resumes",
    )


def _download(args) -> int:
    from ..download import download

    print(download(args.dest, tuple(args.parts), args.xnemo_from, args.token, convert=args.convert).summary())
    return 0


def add_convert(commands) -> None:
    """The ``convert`` command's flags."""
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


def _convert(args) -> int:
    from ..convert import check_output
    from ..loading import load_models

    check_output(args.out, args.bundle, args.force)
    models = load_models(args.models, dtype=args.dtype, allow_missing=tuple(args.allow_missing))
    for path in _write(models, args):
        print(f"wrote {path}")
    return 0


def add_synthesize(commands) -> None:
    """The ``synthesize`` command's flags."""
    synthesize = commands.add_parser("synthesize", help="write an untrained model with rule-made weights")
    synthesize.add_argument("out", type=Path, help="output folder, or output file with --bundle")
    synthesize.add_argument("--preset", choices=MODEL_SIZES, default="tiny")
    synthesize.add_argument("--bundle", action="store_true")
    synthesize.add_argument("--force", action="store_true", help="replace files written before")
    synthesize.set_defaults(run=_synthesize)


def _synthesize(args) -> int:
    from ..convert import check_output
    from ..testing.synthetic_weights import preset_models

    check_output(args.out, args.bundle, args.force)
    models = preset_models(args.preset)
    written = _write(models, args)
    print(f"wrote {len(written)} file(s) of a {args.preset}-size model with synthesized (untrained) weights:")
    for path in written:
        print(f"  {path}")
    return 0


def _write(models, args) -> list[Path]:
    from ..convert import write_bundle, write_parts

    if args.bundle:
        return [write_bundle(models, args.out, overwrite=args.force)]
    return write_parts(models, args.out, overwrite=args.force)
