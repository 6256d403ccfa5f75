"""Opt-in: a real ComfyUI with this pack (set COMFYUI_PATH to a ComfyUI checkout; its Python must
have ComfyUI's requirements, ours and playwright; Chromium at /usr/bin/chromium or CHROMIUM).

Starts ComfyUI with the tiny model in an ``xnemo:`` extra model path, checks ``/object_info`` and
queues every workflow of ``workflows/`` through the real frontend.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from xnemo_core.video import write_video

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to run against a real ComfyUI")
PORT = 8199
URL = f"http://127.0.0.1:{PORT}"
PACK = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_folder):
    root = tmp_path_factory.mktemp("comfy")
    link = Path(COMFYUI) / "custom_nodes" / PACK.name
    if not link.exists():
        link.symlink_to(PACK)
    (root / "extra.yaml").write_text(f"xnemo_test:\n  base_path: {tiny_model_folder.parent}\n  xnemo: .\n")
    inputs = root / "input"
    rng = np.random.default_rng(0)
    write_video(inputs / "frames", rng.integers(0, 256, (1, 96, 96, 3), dtype=np.uint8))
    (inputs / "frames" / "frame_00000.png").rename(inputs / "portrait.png")
    write_video(inputs / "driving.mp4", rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    command = [
        sys.executable,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(PORT),
        "--extra-model-paths-config",
        str(root / "extra.yaml"),
        "--input-directory",
        str(inputs),
        "--output-directory",
        str(root / "output"),
    ]
    process = subprocess.Popen(command, cwd=COMFYUI, stdout=open(root / "log.txt", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{URL}/object_info/LoadXNeMo")
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"ComfyUI did not start: {(root / 'log.txt').read_text()[-2000:]}")
        yield tiny_model_folder.name
    finally:
        process.terminate()
        process.wait(30)


def test_object_info_lists_the_nodes_and_the_motion_type(server):
    info = json.load(urllib.request.urlopen(f"{URL}/object_info"))
    for name in ("LoadXNeMo", "ExtractMotionLatent", "AnimatePortrait", "MotionLatentBlend"):
        assert name in info
    assert "XNEMO_MOTION" in info["ExtractMotionLatent"]["output"]
    assert info["AnimatePortrait"]["input"]["required"]["motion"][0] == "XNEMO_MOTION"
    assert server in info["LoadXNeMo"]["input"]["required"]["model"][0]


def test_every_workflow_runs(server):
    from comfyui_live import run

    overrides = {
        "LoadXNeMo": {"model": server},
        "ImageFromBatch": {"length": 3},
        "ExtractMotionLatent": {"crop": "none"},
        "AnimatePortrait": {"size": 64, "steps": 2, "crop": "none"},
    }
    results = run(URL, overrides)
    assert results.pop("_alerts") == []
    assert len(results) >= 3
    for name, result in results.items():
        assert result["status"] == "success", f"{name}: {result}"
