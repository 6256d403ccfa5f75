"""Command line: ``python -m xnemo_core {convert,check-fixtures} ...``."""

import argparse
import sys
from pathlib import Path

from . import check_fixtures
from .checkpoints import CheckpointError
from .convert import write_bundle, write_parts
from .loading import DTYPES, load_models


def _convert(args) -> int:
    models = load_models(args.models, dtype=args.dtype, allow_missing=tuple(args.allow_missing))
    if args.bundle:
        written = [write_bundle(models, args.out)]
    else:
        written = write_parts(models, args.out)
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xnemo_core")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="write safetensors with the configs embedded")
    convert.add_argument("models", type=Path, help="model folder (official layout) or bundle file")
    convert.add_argument("out", type=Path, help="output folder, or output file with --bundle")
    convert.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    convert.add_argument("--bundle", action="store_true", help="write one file instead of one per part")
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

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
