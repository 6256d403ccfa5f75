"""Cross-reenactment evaluation: metrics, the regressor-based motion and leakage measures, the CLI."""

import json

import numpy as np
import pytest
import torch

from xnemo_core import evaluation as ev
from xnemo_core.__main__ import main
from xnemo_core.train.data import to_tensor


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    path = tmp_path_factory.mktemp("regressor") / "regressor.pt"
    # 150 steps left its motion error at chance (the ranking then hung on the thread count).
    model = ev.train_regressor(32, steps=300, batch=32)
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def pairs():
    return ev.cross_pairs(2, 4, 32)


def test_pairs_hold_the_reference_identity_with_the_driver_motion(pairs):
    pair = pairs[0]
    assert pair.truth.shape == pair.driving.shape == (4, 32, 32, 3) and pair.reference.shape == (32, 32, 3)
    assert not np.array_equal(pair.reference_identity, pair.driver_identity)
    assert np.abs(pair.truth[:, 0, 0].astype(int) - pair.reference[0, 0]).max() <= 2  # the reference's background


def test_metrics_rank_the_truth_above_the_baselines(pairs, regressor):
    model, _ = regressor
    table = ev.evaluate(
        {"truth": lambda p: p.truth, "repeat reference": ev.repeat_reference, "driver": lambda p: p.driving},
        pairs,
        model,
    )
    truth, repeat, driver = table["truth"], table["repeat reference"], table["driver"]
    assert truth["psnr"] > 90 and truth["ssim"] > 0.999
    assert repeat["psnr"] > driver["psnr"] and truth["motion_error"] < repeat["motion_error"]
    assert truth["identity_leakage"] < driver["identity_leakage"]
    assert "| truth |" in ev.format_table(table)


def test_ssim_and_psnr_of_noise_are_low():
    frames = torch.rand(2, 3, 32, 32)
    noisy = (frames + 0.3 * torch.randn_like(frames)).clamp(0, 1)
    assert ev.ssim(noisy, frames) < 0.9 and ev.psnr(noisy, frames) < 15


def test_evaluate_command_prints_and_writes_the_table(regressor, tmp_path, capsys):
    _, path = regressor
    out = tmp_path / "results.json"
    argv = ["evaluate", "--pairs", "1", "--frames", "3", "--size", "32", "--regressor", str(path), "--out", str(out)]
    assert main(argv) == 0
    assert "repeat reference" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["repeat reference"]) >= {"psnr", "ssim", "motion_error", "identity_leakage"}


def test_evaluate_command_compares_models_with_their_vae_ceiling(regressor, tiny_model_folder, tmp_path):
    _, path = regressor
    out = tmp_path / "results.json"
    settings = ["--pairs", "1", "--frames", "2", "--size", "64", "--steps", "1", "--denoise", "0.5"]
    assert main(["evaluate", str(tiny_model_folder), *settings, "--regressor", str(path), "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    name = tiny_model_folder.name
    assert list(table) == ["repeat reference", f"truth through the VAE of {name}", name]
    assert all(np.isfinite(list(row.values())).all() for row in table.values())
    assert 0 <= table[name]["motion_identity_share"] <= 1 and "motion_identity_share" not in table["repeat reference"]
    pair = ev.cross_pairs(1, 2, 64)[0]
    roundtrip = ev.vae_roundtrip_method(ev.load_pipeline(tiny_model_folder, "cpu"))(pair)
    assert roundtrip.shape == pair.truth.shape and roundtrip.dtype == np.uint8


def test_degraded_frames_lose_detail_and_keep_shape_and_range(pairs):
    frames = to_tensor(np.concatenate([pair.truth for pair in pairs]))
    degraded = ev.degrade(frames, torch.Generator().manual_seed(0))
    assert degraded.shape == frames.shape and degraded.min() >= -1 and degraded.max() <= 1

    def edges(x):  # on 2×2 means, where the noise averages out and the blur does not
        x = torch.nn.functional.avg_pool2d(x, 2)
        return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))

    assert (edges(degraded) < edges(frames)).float().mean() > 0.7


def test_an_encoding_of_the_background_is_all_identity(pairs):
    class BackgroundEncoder:  # the corner colour: who it is, whatever they do
        def encode_motion(self, frames):
            return torch.from_numpy(frames[:, :4, :4].astype(np.float32).mean(axis=(1, 2)))

    assert ev.motion_identity_share(BackgroundEncoder(), pairs) > 0.9


def test_table_marks_columns_a_method_lacks():
    table = ev.format_table({"a": {"x": 1.0}, "b": {"x": 2.0, "y": 3.0}})
    assert "| a | 1.0000 | – |" in table and "| b | 2.0000 | 3.0000 |" in table


def test_a_regressor_file_of_another_architecture_is_refused_with_its_path(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"trunk.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="old.pt is not a regressor of this version.*delete it"):
        ev.load_or_train_regressor(path, 32)


def test_motion_reliance_is_zero_for_a_denoiser_that_cannot_see_the_motion(tiny_model_folder):
    from xnemo_core.pipeline import XNeMoPipeline
    from xnemo_core.train.trainer import TrainConfig, initial_models

    pairs = ev.cross_pairs(1, 2, 64)
    seeing = ev.motion_reliance(ev.load_pipeline(tiny_model_folder, "cpu"), pairs)
    blind_models = initial_models(TrainConfig("unused", init_from=str(tiny_model_folder), reset_motion_modules=True))
    blind = ev.motion_reliance(XNeMoPipeline(blind_models), pairs)
    assert blind == {"self": 0.0, "cross": 0.0}
    assert seeing["self"] != 0 and seeing["cross"] != 0


def test_evaluate_scores_speed_presets_against_the_exact_presets_frames(regressor, tiny_model_folder, tmp_path):
    _, path = regressor
    out = tmp_path / "results.json"
    settings = ["--pairs", "1", "--frames", "2", "--size", "64", "--steps", "2", "--presets", "exact", "fast"]
    assert main(["evaluate", str(tiny_model_folder), *settings, "--regressor", str(path), "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    name = tiny_model_folder.name
    assert "psnr_vs_exact" not in table[name]
    assert 0 < table[f"{name} [fast]"]["psnr_vs_exact"] < 90


def test_psnr_vs_exact_is_the_psnr_between_the_two_methods_frames(pairs, regressor):
    model, _ = regressor
    table = ev.evaluate(
        {"truth": lambda p: p.truth, "same": lambda p: p.truth, "driver": lambda p: p.driving},
        pairs,
        model,
        exact_of={"same": "truth", "driver": "truth"},
    )
    assert table["same"]["psnr_vs_exact"] > 90
    assert table["driver"]["psnr_vs_exact"] == pytest.approx(table["driver"]["psnr"])
