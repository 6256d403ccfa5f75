"""Nothing but the download touches the network: importing the pack and running the demo, in a
process whose internet sockets and name lookups are refused and recorded."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUARD = textwrap.dedent(
    """
    import atexit, socket, sys
    attempts = []
    _connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            raise OSError("network refused by the test")
        return _connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(f"lookup {host}")
        raise socket.gaierror("name lookups refused by the test")

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
    atexit.register(lambda: print("network attempts:", attempts, file=sys.stderr))
    """
)


def guarded(code: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", GUARD + textwrap.dedent(code)]
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=900, check=False)


def test_importing_the_pack_makes_no_connection(tmp_path):
    done = guarded(
        f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location(
            "xnemo_pack", {str(ROOT / "__init__.py")!r}, submodule_search_locations=[{str(ROOT)!r}]
        )
        pack = importlib.util.module_from_spec(spec)
        sys.modules["xnemo_pack"] = pack
        spec.loader.exec_module(pack)
        assert "DownloadXNeMoModel" in pack.NODE_CLASS_MAPPINGS
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "network attempts: []" in done.stderr


def test_the_demo_makes_no_connection(tmp_path):
    done = guarded(
        """
        import runpy, sys
        sys.argv = ["xnemo", "animate", "--out", "demo.mp4", "--frames", "3", "--steps", "2"]
        runpy.run_module("xnemo_core", run_name="__main__")
        """,
        tmp_path,
    )
    assert done.returncode == 0 and (tmp_path / "demo.mp4").is_file(), done.stderr[-2000:]
    assert "network attempts: []" in done.stderr


def test_the_guard_records_a_connection(tmp_path):
    done = guarded(
        """
        import urllib.request
        try:
            urllib.request.urlopen("https://huggingface.co/lambdalabs/sd-image-variations-diffusers")
        except OSError:
            pass
        """,
        tmp_path,
    )
    assert "network attempts: ['lookup huggingface.co'" in done.stderr, done.stderr[-2000:]
