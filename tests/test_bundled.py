"""The bundled model and demo media: the README's main command, from a clone, on the CPU."""

import numpy as np
import torch

from nodes import comfy_bridge
from xnemo_core import bundled
from xnemo_core.__main__ import main
from xnemo_core.loading import load_models
from xnemo_core.video import read_frames, read_image

MAX_BYTES = 25 * 10**6


def test_the_bundled_model_fits_the_budget_and_loads_strictly():
    files = list(bundled.MODEL.glob("*.safetensors"))
    assert sum(f.stat().st_size for f in files) <= MAX_BYTES
    models = load_models(bundled.MODEL, dtype="fp16")
    assert models.config.motion_guidance == "tokens"
    assert models.vae is not None and models.image_encoder is not None


def test_main_command_animates_the_demo_portrait_with_the_demo_clip(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main(["animate", "--out", str(out), "--frames", "6"]) == 0
    video, _ = read_frames(out)
    portrait = read_image(bundled.DEMO_PORTRAIT).astype(np.float32)
    assert video.shape == (6, *portrait.shape)
    frames = video.astype(np.float32)
    # The portrait's colours carry over, and the face moves from frame to frame.
    assert np.abs(frames.mean(axis=(0, 1, 2)) - portrait.mean(axis=(0, 1))).max() < 40
    assert np.abs(np.diff(frames, axis=0)).mean() > 1.0
    gif = tmp_path / "demo.gif"
    assert main(["animate", "--out", str(gif), "--frames", "2", "--steps", "5"]) == 0
    assert read_frames(gif)[0].shape == (2, *portrait.shape)


def test_loader_lists_the_bundled_model_with_no_setup(monkeypatch, tmp_path):
    monkeypatch.setenv("XNEMO_MODELS", str(tmp_path / "nothing-here"))
    assert comfy_bridge.model_choices()[bundled.MODEL.name] == bundled.MODEL


def test_demo_media_is_copied_into_an_empty_input_folder_once(monkeypatch, tmp_path):
    monkeypatch.setattr(comfy_bridge, "directory", lambda kind: tmp_path / kind)
    copied = comfy_bridge.install_demo_inputs()
    assert sorted(p.name for p in copied) == sorted(comfy_bridge.DEMO_INPUTS.values())
    assert (tmp_path / "input" / "xnemo_demo_portrait.png").read_bytes() == bundled.DEMO_PORTRAIT.read_bytes()
    assert comfy_bridge.install_demo_inputs() == []


def test_the_demo_media_are_the_documented_held_out_identities_of_the_synthetic_world():
    from xnemo_core.synthetic import render, render_clip
    from xnemo_core.train.data import SyntheticFaces

    world = SyntheticFaces(3, 48, 128, seed=20_000)
    portrait = render(world.identity(0), world.motion(0)[0], 128)
    assert np.abs(read_image(bundled.DEMO_PORTRAIT).astype(int) - portrait).mean() < 1
    for index, clip in ((1, bundled.DEMO_DRIVING), (2, bundled.DEMO_DRIVING_B)):
        frames, fps = read_frames(clip)
        truth = render_clip(world.identity(index), world.motion(index), 128)
        assert fps == 25 and np.abs(frames.astype(int) - truth).mean() < 6  # codec noise only
    one, two = (read_frames(clip)[0].astype(int) for clip in (bundled.DEMO_DRIVING, bundled.DEMO_DRIVING_B))
    assert np.abs(one - two).mean() > 20  # another person with another motion


def test_the_demo_motion_is_the_bundled_models_reading_of_the_demo_clip():
    from xnemo_core.face import driving_crops
    from xnemo_core.motion import load_motion
    from xnemo_core.pipeline import XNeMoPipeline

    models = load_models(bundled.MODEL, dtype="fp32")
    frames, fps = read_frames(bundled.DEMO_DRIVING)
    tokens = XNeMoPipeline(models).encode_motion(driving_crops(frames, None).faces)
    shipped = load_motion(bundled.DEMO_MOTION)
    assert shipped.model_id == models.motion_id.current and shipped.fps == fps == 25
    torch.testing.assert_close(shipped.tokens, tokens, rtol=1e-4, atol=1e-4)
