"""``python -m xnemo_core animate`` end to end on the tiny model, and its error messages."""

import numpy as np
import pytest

from xnemo_core.__main__ import main
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
