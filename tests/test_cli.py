"""``python -m xnemo_core animate`` end to end on the tiny model, and its error messages."""

import numpy as np
import pytest
import torch

from xnemo_core import bundled
from xnemo_core.__main__ import main
from xnemo_core.pipeline import XNeMoPipeline
from xnemo_core.video import read_frames, write_video

FRAMES = 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    write_video(folder / "portrait", rng.integers(0, 256, (1, 96, 96, 3), dtype=np.uint8))
    (folder / "portrait" / "frame_00000.png").rename(folder / "portrait.png")
    write_video(folder / "driving.mp4", rng.integers(0, 256, (FRAMES, 64, 64, 3), dtype=np.uint8), fps=10)
    gradient = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (FRAMES, 64, 1, 3))
    write_video(folder / "faceless.mp4", gradient)
    (folder / "notes.png").write_text("not an image")
    (folder / "broken.mp4").write_text("not a video")
    return folder


def animate_args(models, reference, driving, out, *extra):
    return [
        "animate",
        "--models",
        str(models),
        "--reference",
        str(reference),
        "--driving",
        str(driving),
        "--out",
        str(out),
        "--steps",
        "2",
        "--size",
        "64",
        "--device",
        "cpu",
        *extra,
    ]


def test_animate_writes_an_mp4_with_one_frame_per_driving_frame(tiny_model_folder, inputs, tmp_path, capsys):
    out = tmp_path / "result.mp4"
    args = animate_args(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", out, "--crop", "none")
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    frames, fps = read_frames(out)
    assert frames.shape == (FRAMES, 64, 64, 3) and fps == pytest.approx(10)


def test_paste_back_writes_the_frames_within_the_whole_reference(tiny_model_folder, inputs, tmp_path):
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, (1, 96, 160, 3), dtype=np.uint8)
    write_video(tmp_path / "wide", wide)
    reference = tmp_path / "wide" / "frame_00000.png"
    crop, pasted = tmp_path / "crop", tmp_path / "pasted"
    args = animate_args(tiny_model_folder, reference, inputs / "driving.mp4", crop, "--crop", "none", "--frames", "2")
    assert main(args) == 0 and main([*args[:8], str(pasted), *args[9:], "--paste-back"]) == 0
    crop_frames, pasted_frames = read_frames(crop)[0], read_frames(pasted)[0]
    assert crop_frames.shape == (2, 64, 64, 3) and pasted_frames.shape == (2, 96, 160, 3)
    assert np.array_equal(pasted_frames[:, :, :8], np.repeat(wide[:, :, :8], 2, axis=0))  # outside the centre square
    assert not np.array_equal(pasted_frames[:, :, 48:112], np.repeat(wide[:, :, 48:112], 2, axis=0))


def test_animate_writes_png_frames_to_a_folder(tiny_model_folder, inputs, tmp_path):
    out = tmp_path / "frames"
    args = animate_args(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", out, "--crop", "none")
    assert main([*args, "--frames", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_00000.png", "frame_00001.png"]


@pytest.mark.parametrize(
    "reference, driving, message",
    [
        ("missing.png", "driving.mp4", "missing.png: file not found"),
        ("notes.png", "driving.mp4", "notes.png: not an image"),
        ("portrait.png", "broken.mp4", "broken.mp4: no frames could be decoded"),
        ("portrait.png", "faceless.mp4", "no face found in any of the 3 driving frames"),
    ],
)
def test_bad_inputs_give_one_clear_line(tiny_model_folder, inputs, tmp_path, capsys, reference, driving, message):
    args = animate_args(tiny_model_folder, inputs / reference, inputs / driving, tmp_path / "x.mp4")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_model_folder_is_named(inputs, tmp_path, capsys):
    args = animate_args(tmp_path / "nomodel", inputs / "portrait.png", inputs / "driving.mp4", tmp_path / "x.mp4")
    assert main([*args, "--crop", "none"]) == 2
    assert "nomodel" in capsys.readouterr().err


def test_frame_counts_below_one_name_the_flag(tiny_model_folder, inputs, tmp_path, capsys):
    frames_folder = tmp_path / "driving_frames"
    write_video(frames_folder, np.zeros((6, 64, 64, 3), np.uint8))
    for driving in (inputs / "driving.mp4", frames_folder):
        for count in ("0", "-5"):
            args = animate_args(tiny_model_folder, inputs / "portrait.png", driving, tmp_path / "x.mp4")
            assert main([*args, "--crop", "none", "--frames", count]) == 2
            assert f"--frames must be at least 1, got {count}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--cfg", "nan", "--cfg: guidance scale must be a number from 1"),
        ("--cfg", "-1", "--cfg: guidance scale"),
        ("--denoise", "inf", "--denoise: denoise must be in (0, 1]"),
        ("--seed", "-1", "--seed: seed must be a whole number from 0"),
        ("--seed", str(2**64), "--seed: seed"),
        ("--size", "0", "--size: height 0 must be a multiple of 64 from 64 to 2048"),
        ("--size", "4096", "--size: height 4096 must be a multiple of 64 from 64 to 2048"),
        ("--steps", "0", "--steps: steps must be a whole number from 1 to 1000"),
        ("--steps", "100000", "--steps: steps must be a whole number from 1 to 1000, got 100000"),
        ("--context-overlap", "-1", "--context-overlap: context overlap"),
        ("--device", "gpu", "unknown device 'gpu'"),
    ],
)
def test_bad_settings_are_refused_before_anything_loads(inputs, tmp_path, capsys, flag, value, message):
    args = animate_args(tmp_path / "no_model_here", inputs / "portrait.png", inputs / "driving.mp4", tmp_path / "x.mp4")
    assert main([*args, flag, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "no_model_here" not in err and "denoising" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_one_clear_line(inputs, tmp_path, capsys):
    args = animate_args(tmp_path / "m", inputs / "portrait.png", inputs / "driving.mp4", tmp_path / "x.mp4")
    args[args.index("--device") + 1] = "cuda"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "device 'cuda': this PyTorch is built" in err and "Traceback" not in err


def test_outputs_that_cannot_be_written_are_refused_before_anything_loads(inputs, tmp_path, capsys):
    (tmp_path / "plain").write_text("keep me")
    cases = {
        tmp_path / "plain": "is a file; a path without suffix is written as a folder",
        tmp_path / "plain" / "x.mp4": "because",
        tmp_path / "notes.txt": "unknown output type '.txt'",
        tmp_path: "holds other files than earlier frames",
    }
    for out, message in cases.items():
        args = animate_args(tmp_path / "no_model_here", inputs / "portrait.png", inputs / "driving.mp4", out)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "no_model_here" not in err
    assert (tmp_path / "plain").read_text() == "keep me"


def test_a_frame_folder_of_an_earlier_run_is_replaced_not_mixed(tiny_model_folder, inputs, tmp_path, capsys):
    out = tmp_path / "frames"
    write_video(out, np.zeros((5, 8, 8, 3), np.uint8))
    args = animate_args(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", out, "--crop", "none")
    assert main([*args, "--frames", "2"]) == 0
    assert "replaced the 5 frames of an earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    assert sorted(p.name for p in out.iterdir()) == ["frame_00000.png", "frame_00001.png"]
    assert read_frames(out)[0].shape == (2, 64, 64, 3)


def test_an_unreadable_face_detector_model_is_named(tiny_model_folder, inputs, tmp_path, capsys):
    fake = tmp_path / "yunet.onnx"
    fake.write_bytes(b"not a network")
    args = animate_args(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", tmp_path / "x.mp4")
    assert main([*args, "--face-model", str(fake)]) == 2
    err = capsys.readouterr().err
    assert "yunet.onnx: OpenCV cannot read it as a YuNet" in err and "Traceback" not in err


def test_a_synthesized_model_animates_the_demo_media_as_they_are(tmp_path, capsys):
    assert main(["synthesize", str(tmp_path / "tiny")]) == 0
    out = tmp_path / "demo.mp4"
    args = ["animate", "--models", str(tmp_path / "tiny"), "--out", str(out), "--frames", "2", "--steps", "1"]
    assert main([*args, "--size", "64"]) == 0
    assert read_frames(out)[0].shape == (2, 64, 64, 3)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], {"sampler": "ddim", "steps": 2, "guidance_until": 1.0, "deep_cache_interval": 1}),
        (["--preset", "fast"], {"sampler": "unipc", "steps": 6, "guidance_until": 1.0, "deep_cache_interval": 1}),
        (["--preset", "balanced", "--steps", "3"], {"sampler": "unipc", "steps": 3, "deep_cache_interval": 2}),
        (["--preset", "turbo", "--guidance-until", "1"], {"steps": 4, "guidance_until": 1.0}),
        (["--preset", "fast", "--sampler", "ddim", "--deep-cache-interval", "3"], {"sampler": "ddim", "steps": 6}),
    ],
)
def test_a_speed_preset_fills_the_settings_its_flags_leave_unset(
    tiny_model_folder, inputs, tmp_path, monkeypatch, flags, expected
):
    used = []
    denoise = XNeMoPipeline.denoise
    monkeypatch.setattr(
        XNeMoPipeline, "denoise", lambda self, c, m, s, *a, **k: used.append(s) or denoise(self, c, m, s)
    )
    args = animate_args(tiny_model_folder, inputs / "portrait.png", inputs / "driving.mp4", tmp_path / "o.gif")
    args = [arg for arg in args if arg not in ("--steps", "2")] + (["--steps", "2"] if not flags else [])
    assert main([*args, "--crop", "none", "--frames", "2", *flags]) == 0
    assert {name: getattr(used[0], name) for name in expected} == expected


def test_the_bundled_model_warns_on_images_of_another_world(inputs, tmp_path, capsys):
    args = ["animate", "--reference", str(inputs / "portrait.png"), "--driving", str(inputs / "driving.mp4")]
    assert main([*args, "--out", str(tmp_path / "x.gif"), "--frames", "1", "--steps", "1"]) == 0
    assert "the bundled model knows only the synthetic cartoon faces" in capsys.readouterr().err


def test_convert_refuses_outputs_the_loader_could_not_find_or_would_overwrite(tiny_model_folder, tmp_path, capsys):
    convert = ["convert", str(tiny_model_folder)]
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("keep me")
    for out in (tmp_path / "folder", tmp_path / "plain"):
        assert main([*convert, str(out), "--bundle"]) == 2
        assert "a bundle must be a file ending in .safetensors" in capsys.readouterr().err
    (tmp_path / "dir.safetensors").mkdir()
    assert main([*convert, str(tmp_path / "dir.safetensors"), "--bundle"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main([*convert, str(tmp_path / "plain")]) == 2
    assert "is a file; the parts are written into a folder" in capsys.readouterr().err
    bundle = tmp_path / "x.safetensors"
    assert main([*convert, str(bundle), "--bundle"]) == 0
    written = bundle.stat().st_mtime_ns
    assert main([*convert, str(bundle), "--bundle"]) == 2
    assert "pass --force" in capsys.readouterr().err and bundle.stat().st_mtime_ns == written
    assert main([*convert, str(bundle), "--bundle", "--force"]) == 0
    assert (tmp_path / "plain").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.safetensors", "folder", "plain", "x.safetensors"]


def test_the_bundled_model_named_explicitly_runs_at_its_own_recipe(inputs, tmp_path, capsys):
    """Its recipe (128², face crops, no detection), not the official one's face detection, which
    finds no face in these frames."""
    out = tmp_path / "explicit.gif"
    args = ["animate", "--models", str(bundled.MODEL), "--reference", str(inputs / "portrait.png")]
    args += ["--driving", str(inputs / "driving.mp4"), "--out", str(out), "--frames", "2", "--steps", "2"]
    assert main([*args, "--device", "cpu"]) == 0
    assert read_frames(out)[0].shape == (2, 128, 128, 3)


def test_the_installed_command_calls_itself_xnemo(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/xnemo"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: xnemo ")
    monkeypatch.setattr("sys.argv", ["/src/xnemo_core/__main__.py"])
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    assert capsys.readouterr().out.startswith("usage: python -m xnemo_core download ")
