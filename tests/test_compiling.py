"""Compile modes: ``auto`` animates eager while a background thread compiles for the next video.

Dynamo's ``eager`` backend stands in for inductor (the graph logic is the same, compiling is quick
on a CPU, and its results are bit for bit eager's)."""

import functools
import logging
import threading

import pytest
import torch
from conftest import random_condition, random_motion

from xnemo_core import compiling
from xnemo_core.compiling import CompiledDenoiser, call_shape, release_compiled, use_cache_folder
from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
from xnemo_core.testing.synthetic_weights import preset_models

FRAMES = 5


@pytest.fixture
def models(monkeypatch):
    real = torch.compile
    monkeypatch.setattr(compiling, "compile_wanted", lambda mode, device: mode != "off")
    monkeypatch.setattr(compiling.torch, "compile", lambda module, **_: real(module, fullgraph=True, backend="eager"))
    models = preset_models("tiny", device="cpu")
    yield models
    release_compiled(models.denoising_unet)


class Counted:
    """Counts the calls of a model's compiled function."""

    def __init__(self, compiled: CompiledDenoiser, gate: threading.Event | None = None):
        self.calls = 0
        function = compiled.function

        @functools.wraps(function)
        def counted(*args, **kwargs):
            if gate is not None:
                gate.wait()
            self.calls += 1
            return function(*args, **kwargs)

        compiled.function = counted


def animate(models, mode: str) -> tuple[torch.Tensor, XNeMoPipeline]:
    pipeline = XNeMoPipeline(models, compile=mode)
    condition = random_condition(pipeline, (64, 64))
    settings = AnimationSettings(steps=2, height=64, width=64, context_frames=4, context_overlap=1, seed=5)
    return pipeline.denoise(condition, random_motion(FRAMES), settings), pipeline


def test_auto_runs_eager_now_and_compiled_for_the_next_video(models):
    eager, _ = animate(models, "off")
    compiled = CompiledDenoiser.of(models.denoising_unet, cuda_graphs=False)
    counted = Counted(compiled)
    first, pipeline = animate(models, "auto")
    compiled.wait()
    background_calls = counted.calls
    assert background_calls == len(compiled.ready) >= 1  # one call per call shape
    second, pipeline = animate(models, "auto")
    assert counted.calls > background_calls and pipeline.denoiser.compiled_calls > 0
    assert torch.equal(first, eager) and torch.equal(second, eager)


def test_compiling_waits_for_the_video_s_end_and_a_video_started_meanwhile_waits_for_it(models):
    gate = threading.Event()
    compiled = CompiledDenoiser.of(models.denoising_unet, cuda_graphs=False)
    counted = Counted(compiled, gate)
    pipeline = XNeMoPipeline(models, compile="auto")
    condition = random_condition(pipeline, (64, 64))
    settings = AnimationSettings(steps=2, height=64, width=64, context_frames=4, context_overlap=1)
    seen_during_denoising = []
    pipeline.denoise(condition, random_motion(FRAMES), settings, on_step=lambda *_: seen_during_denoising.append(
        compiled._worker))
    assert seen_during_denoising == [None, None]  # nothing compiles beside the eager video
    assert compiled._worker is not None  # the video's shapes compile now
    threading.Timer(0.2, gate.set).start()
    started_meanwhile = XNeMoPipeline(models, compile="auto")  # waits for that compilation
    assert compiled.ready and counted.calls == len(compiled.ready)
    started_meanwhile.denoise(condition, random_motion(FRAMES), settings)
    assert started_meanwhile.denoiser.compiled_calls > 0


def test_on_compiles_at_once(models):
    compiled = CompiledDenoiser.of(models.denoising_unet, cuda_graphs=False)
    counted = Counted(compiled)
    animate(models, "on")
    assert counted.calls > 0 and not compiled.ready  # nothing was left to the background


def test_a_failed_compilation_leaves_eager_in_use_and_is_not_retried(models, caplog):
    compiled = CompiledDenoiser.of(models.denoising_unet, cuda_graphs=False)
    attempts = []

    def broken(*args, **kwargs):
        attempts.append(1)
        raise RuntimeError("inductor is unhappy")

    compiled.function = broken
    eager, _ = animate(models, "off")
    with caplog.at_level(logging.WARNING):
        first, _ = animate(models, "auto")
        compiled.wait()
    tried = len(attempts)
    second, _ = animate(models, "auto")
    compiled.wait()
    assert tried >= 1 and len(attempts) == tried and not compiled.ready
    assert torch.equal(first, eager) and torch.equal(second, eager)
    assert "compiling the denoiser failed, it runs eager: inductor is unhappy" in caplog.text


def test_release_forgets_the_compiled_code(models):
    compiled = CompiledDenoiser.of(models.denoising_unet, cuda_graphs=False)
    animate(models, "auto")
    compiled.wait()
    release_compiled(models.denoising_unet)
    assert CompiledDenoiser.of(models.denoising_unet, cuda_graphs=False) is not compiled
    assert set(models.denoising_unet.state_dict()) == set(preset_models("tiny", device="meta").denoising_unet.state_dict())


def test_call_shapes_tell_apart_what_selects_a_graph():
    x = torch.zeros(2, 3)
    base = call_shape((x, {"a": x}), {"rows": slice(1, None), "keep": False})
    assert base == call_shape((torch.ones(2, 3), {"a": x}), {"rows": slice(1, None), "keep": False})
    for other in (
        call_shape((torch.zeros(2, 4), {"a": x}), {"rows": slice(1, None), "keep": False}),
        call_shape((x.half(), {"a": x}), {"rows": slice(1, None), "keep": False}),
        call_shape((x, {"a": x}), {"rows": slice(None), "keep": False}),
        call_shape((x, {"a": x}), {"rows": slice(1, None), "keep": True}),
        call_shape((x, {"b": x}), {"rows": slice(1, None), "keep": False}),
    ):
        assert other != base


def test_the_cache_folder_is_set_unless_the_user_set_one(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    use_cache_folder(tmp_path / "inductor")
    assert (tmp_path / "inductor").is_dir()
    assert compiling.os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    use_cache_folder(tmp_path / "other")
    assert compiling.os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


def test_auto_is_on_for_cuda_with_triton_only():
    assert not compiling.compile_wanted("auto", torch.device("cpu"))
    assert compiling.compile_wanted("on", torch.device("cpu")) and not compiling.compile_wanted("off", torch.device("cuda"))
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        compiling.compile_wanted("fast", torch.device("cpu"))


def test_one_video_compiles_first_only_where_the_clip_pays_it_back(monkeypatch):
    monkeypatch.setattr(compiling.importlib.util, "find_spec", lambda name: object())  # Triton "installed"
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compiling.one_video_mode("auto", compiling.ONE_VIDEO_PAYBACK_FRAMES, cuda) == "on"
    assert compiling.one_video_mode("auto", 48, cuda) == "off"
    assert compiling.one_video_mode("auto", 10_000, cpu) == "off"
    assert compiling.one_video_mode("on", 48, cpu) == "on" and compiling.one_video_mode("off", 10_000, cuda) == "off"
