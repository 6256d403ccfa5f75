"""Checks that need a new Python process (Triton's interpreter is chosen when a kernel is defined)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_fresh(script: str, **env) -> subprocess.CompletedProcess:
    """``script`` in a new Python process that imports this checkout's packages."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **env, "PYTHONPATH": path}
    command = [sys.executable, "-c", textwrap.dedent(script)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
