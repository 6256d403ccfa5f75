"""Motion latent arithmetic, length matching and files."""

import pytest
import torch
from safetensors.torch import save_file

from xnemo_core import motion as core
from xnemo_core.loading import load_models


def latent(frames, seed=0, model_id="me-a"):
    return core.MotionLatent(torch.randn(frames, 32, 16, generator=torch.Generator().manual_seed(seed)), model_id)


@pytest.mark.parametrize(
    "mode, expected",
    [("trim", [0, 1]), ("loop", [0, 1, 2, 0, 1, 2, 0]), ("ping-pong", [0, 1, 2, 1, 0, 1, 2])],
)
def test_length_modes_pick_the_expected_frames(mode, expected):
    frames = torch.arange(3.0)
    assert match_or_none(frames, len(expected), mode) == [float(i) for i in expected]


def match_or_none(frames, length, mode):
    return core.match_length(frames, length, mode).tolist()


def test_resample_interpolates_linearly_and_trim_cannot_lengthen():
    assert core.match_length(torch.tensor([0.0, 2.0]), 3, "resample").tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="cannot trim 2 frames to 3"):
        core.match_length(torch.zeros(2), 3, "trim")


def test_interpolation_ends_are_the_inputs():
    a, b = latent(4), latent(4, seed=1)
    assert torch.equal(core.interpolate(a, b, 0.0).tokens, a.tokens)
    torch.testing.assert_close(core.interpolate(a, b, 1.0).tokens, b.tokens)


def test_relative_adds_only_the_change_of_b():
    a, b = latent(4), latent(4, seed=1)
    out = core.relative(a, b).tokens
    torch.testing.assert_close(out[0], a.tokens[0])
    torch.testing.assert_close(out[3] - a.tokens[3], b.tokens[3] - b.tokens[0])


def test_intensity_scales_around_the_neutral_frame():
    a = latent(5)
    torch.testing.assert_close(core.intensity(a, 1.0).tokens, a.tokens)
    doubled = core.intensity(a, 2.0, neutral_frame=2).tokens
    torch.testing.assert_close(doubled - a.tokens[2], 2 * (a.tokens - a.tokens[2]))
    with pytest.raises(ValueError, match="frame 9 is outside"):
        core.intensity(a, 2.0, neutral_frame=9)


def test_expression_edit_adds_the_example_difference_everywhere():
    a, example = latent(3), latent(6, seed=2)
    out = core.expression_edit(a, example, 1, 4, 0.5).tokens
    torch.testing.assert_close(out - a.tokens, (0.5 * (example.tokens[4] - example.tokens[1])).expand(3, -1, -1))


def test_smoothing_reduces_frame_to_frame_change():
    a = latent(30)
    jitter = (a.tokens[1:] - a.tokens[:-1]).abs().mean()
    assert (core.smooth(a, 2.0).tokens.diff(dim=0)).abs().mean() < jitter / 2


def test_latents_of_different_encoders_do_not_mix():
    with pytest.raises(ValueError, match="different motion encoders"):
        core.interpolate(latent(2), latent(2, model_id="me-b"), 0.5)
    with pytest.raises(ValueError, match="another motion encoder"):
        core.check_compatible(latent(2), core.MotionEncoderId("me-b"))


def test_files_round_trip_and_bad_files_are_named(tmp_path):
    a = core.MotionLatent(latent(3).tokens, "me-a", fps=24.0, source_size=(480, 640), boxes=torch.rand(3, 4))
    loaded = core.load_motion(core.save_motion(a, tmp_path / "m.safetensors"))
    assert torch.equal(loaded.tokens, a.tokens) and torch.equal(loaded.boxes, a.boxes)
    assert (loaded.fps, loaded.source_size, loaded.model_id) == (24.0, (480, 640), "me-a")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors"):
        core.load_motion(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="none.safetensors"):
        core.load_motion(tmp_path / "none.safetensors")


def test_fingerprint_names_the_weights_not_the_precision(tiny_model_folder):
    ids = {dtype: load_models(tiny_model_folder, dtype=dtype).motion_id for dtype in ("fp32", "fp16", "bf16")}
    assert len(set(ids.values())) == 1
    other = load_models(tiny_model_folder, dtype="fp32")
    with torch.no_grad():
        other.motion_encoder.final_proj.weight[0, 0] += 0.01
    assert core.MotionEncoderId.of(other.motion_encoder) != ids["fp32"]


def test_files_written_with_the_old_fingerprint_keep_loading_in_any_precision(tiny_model_folder, tmp_path):
    fp16 = load_models(tiny_model_folder, dtype="fp16")
    weight = fp16.motion_encoder.final_proj.weight.detach().float()
    old_id = f"me-{weight.sum().item():.6e}-{weight.abs().sum().item():.6e}"  # how fp16 motion was stamped
    path = core.save_motion(core.MotionLatent(torch.randn(2, 32, 16), old_id), tmp_path / "old.safetensors")
    for dtype in ("fp32", "bf16", "fp16"):
        core.check_compatible(core.load_motion(path), load_models(tiny_model_folder, dtype=dtype).motion_id)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"fps": "abc"}, "not a valid motion file"),
        ({"source_size": "[1"}, "not a valid motion file"),
        ({"fps": "-3"}, "above 0"),
    ],
)
def test_malformed_metadata_is_named_with_the_file(tmp_path, metadata, message):
    path = tmp_path / "m.safetensors"
    stamp = {"format": core.FORMAT, "model_id": "me-a", "fps": "25.0", "source_size": "null"}
    save_file({"tokens": torch.zeros(2, 32, 16)}, str(path), metadata=stamp | metadata)
    with pytest.raises(ValueError, match=f"m.safetensors: .*{message}"):
        core.load_motion(path)


def test_non_finite_tokens_are_refused_in_files_and_latents(tmp_path):
    tokens = torch.zeros(2, 32, 16)
    tokens[1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        core.MotionLatent(tokens, "me-a")
    path = tmp_path / "nan.safetensors"
    save_file({"tokens": tokens}, str(path), metadata={"format": core.FORMAT, "model_id": "me-a"})
    with pytest.raises(ValueError, match="nan.safetensors: .*NaN"):
        core.load_motion(path)


@pytest.mark.parametrize("fps", [0.0, -1.0, float("nan"), float("inf")])
def test_motion_frame_rates_must_be_positive_and_finite(fps):
    with pytest.raises(ValueError, match="frames per second"):
        core.MotionLatent(torch.zeros(1, 32, 16), "me-a", fps=fps)
