"""What both trainings (X-NeMo, VAE) share: an output folder with an accelerate run, and a
JSON-lines log of loss records that also feeds an optional callback (progress bars)."""

import json
from pathlib import Path


def start(output_dir: str, mixed_precision: str, seed: int):
    """Create ``output_dir`` and return it with a seeded ``accelerate.Accelerator``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    # YAML (files and ``--set``) reads a bare ``no`` as false.
    accelerator = Accelerator(mixed_precision=mixed_precision or "no", project_dir=str(output))
    set_seed(seed)
    return output, accelerator


class RunLog:
    """Appends records to ``path``, one JSON object per line, and passes them to ``on_log``."""

    def __init__(self, path: Path, on_log=None):
        self.file, self.on_log = path.open("a"), on_log

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.on_log is not None:
            self.on_log(record)

    def close(self) -> None:
        self.file.close()
