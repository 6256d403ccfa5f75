"""``python -m xnemo_core``: the command line (:mod:`xnemo_core.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
