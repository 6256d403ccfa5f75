"""One video on two gloo processes (CPU): the same frames as one process, and a failing rank
stops every rank with its name instead of a hang."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from xnemo_core import distributed
from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
from xnemo_core.testing.synthetic_weights import preset_models
from xnemo_core.window_prediction import WindowPredictor
from xnemo_core.video import read_frames, write_image, write_video

FRAMES = 9
SETTINGS = dict(steps=4, height=64, width=64, context_frames=4, context_overlap=1)
"""Official windows of 4 over 9 frames: 3 windows a step, dealt 2 + 1 over two ranks."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _inputs():
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    motion = torch.randn(FRAMES, 32, 16, generator=torch.Generator().manual_seed(1))
    return portrait, motion


def _animate(settings: AnimationSettings):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every rank, and the one-process run compared with them, uses one thread
    try:
        pipeline = XNeMoPipeline(preset_models("tiny", device="cpu"))
        portrait, motion = _inputs()
        return pipeline.animate(portrait, portrait, motion, settings)
    finally:
        torch.set_num_threads(threads)  # later tests in this process keep their threads


def _rank(rank: int, world_size: int, port: int, overrides: dict, out: str, fail_rank: int | None) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        settings = AnimationSettings(**SETTINGS, **overrides)
        if rank == fail_rank:
            _fail_on_second_call()
        animation = _animate(settings)
        torch.save({"latents": animation.latents, "video": animation.video}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _fail_on_second_call():
    calls = []
    real = WindowPredictor._predict

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (injected)")
        return real(self, *args)

    WindowPredictor._predict = failing


@pytest.mark.parametrize(
    "overrides", [{}, {"sampler": "unipc", "guidance_until": 0.5, "deep_cache_interval": 2}], ids=["exact", "fast"]
)
def test_two_ranks_give_the_single_process_video_bit_for_bit(tmp_path, overrides):
    out = str(tmp_path / "result")
    mp.spawn(_rank, args=(2, _free_port(), overrides, out, None), nprocs=2)
    alone = _animate(AnimationSettings(**SETTINGS, **overrides))
    first, second = (torch.load(f"{out}.{rank}", weights_only=True) for rank in (0, 1))
    assert torch.equal(first["latents"], alone.latents) and torch.equal(second["latents"], alone.latents)
    assert torch.equal(first["video"], alone.video)
    assert second["video"] is None  # rank 0 alone decodes


def test_a_failing_rank_stops_every_rank_naming_it(tmp_path):
    with pytest.raises(mp.ProcessRaisedException) as error:
        mp.spawn(_rank, args=(2, _free_port(), {}, str(tmp_path / "r"), 1), nprocs=2)
    message = str(error.value)
    assert "out of memory (injected)" in message or "rank 1 of 2 failed" in message
    assert not list(tmp_path.iterdir())


def test_the_failing_ranks_name_reaches_the_others(tmp_path):
    """Rank 0 is told which rank failed (rank 1 holds its own error)."""
    context = mp.get_context("spawn")
    port = _free_port()
    results = context.Queue()
    workers = [context.Process(target=_report_failure, args=(rank, port, results)) for rank in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    reports = dict(results.get(timeout=5) for _ in workers)
    assert reports[0] == "RankFailed: rank 1 of 2 failed (its error is in its output); this rank stops too"
    assert reports[1] == "RuntimeError: injected"


def _report_failure(rank: int, port: int, results) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=2)

    def run(job):
        if rank == 1:
            raise RuntimeError("injected")
        return (torch.ones(2),)

    try:
        list(distributed.spread([0, 1], run, distributed.current(), torch.device("cpu")))
    except Exception as error:
        results.put((rank, f"{type(error).__name__}: {error}"))
    finally:
        dist.destroy_process_group()


def test_torchrun_animates_with_the_cli_as_one_process_does(tmp_path):
    portrait, _ = _inputs()
    write_image(tmp_path / "portrait.png", portrait)
    rng = np.random.default_rng(2)
    write_video(tmp_path / "driving.mp4", rng.integers(0, 256, (FRAMES, 64, 64, 3), dtype=np.uint8), fps=10)
    models = tmp_path / "tiny"
    root = Path(__file__).resolve().parent.parent
    env = os.environ | {"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    common = ["--reference", str(tmp_path / "portrait.png"), "--driving", str(tmp_path / "driving.mp4")]
    common += ["--models", str(models), "--steps", "2", "--size", "64", "--crop", "none", "--device", "cpu"]
    common += ["--context", "4", "--context-overlap", "1"]
    subprocess.run([sys.executable, "-m", "xnemo_core", "synthesize", str(models)], check=True, env=env, cwd=root)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
    two = subprocess.run(
        [*torchrun, str(_free_port()), "-m", "xnemo_core", "animate", *common, "--out", str(tmp_path / "two")],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote") == 1
    one = [sys.executable, "-m", "xnemo_core", "animate", *common, "--out", str(tmp_path / "one")]
    subprocess.run(one, check=True, env=env, cwd=root, capture_output=True)
    assert np.array_equal(read_frames(tmp_path / "two")[0], read_frames(tmp_path / "one")[0])
