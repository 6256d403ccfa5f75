"""Parity with the official code's golden outputs (float32, CPU)."""

import shutil

import pytest

from xnemo_core.testing import check_fixtures


@pytest.fixture(scope="module")
def golden_results(fixtures_dir):
    return check_fixtures.run_fixtures(fixtures_dir, "golden")


def test_every_golden_fixture_is_within_tolerance(golden_results):
    checked = {(r.fixture, r.tensor) for r in golden_results}
    assert ("golden_motion_encoder", "tokens") in checked
    assert ("golden_unet_step", "noise_pred") in checked
    assert ("golden_unet_step", "noise_pred_no_reference_zero_motion") in checked
    assert ("golden_pipeline", "video (max abs)") in checked
    assert ("golden_pipeline", "final_latents_scaled (mean abs)") in checked
    failures = [str(r) for r in golden_results if not r.ok]
    assert not failures, "\n".join(failures)


def test_cli_reports_and_exits_zero(fixtures_dir, tmp_path, capsys):
    for name in ("golden.json", "golden_motion_encoder.safetensors"):
        shutil.copy(fixtures_dir / name, tmp_path / name)
    assert check_fixtures.main([str(tmp_path), "--tag", "golden"]) == 0
    out = capsys.readouterr().out
    assert "3 passed, 0 failed" in out and "tokens" in out


def test_cli_fails_cleanly_for_an_unknown_tag(fixtures_dir, capsys):
    assert check_fixtures.main([str(fixtures_dir), "--tag", "nosuchtag"]) == 2
    assert "nosuchtag.json" in capsys.readouterr().err
