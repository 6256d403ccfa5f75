"""Parity with the official code's golden outputs (float32, CPU)."""

from xnemo_core import check_fixtures


def test_every_golden_module_fixture_is_within_tolerance(fixtures_dir):
    results = check_fixtures.run_fixtures(fixtures_dir, "golden")
    checked = {(r.fixture, r.tensor) for r in results}
    assert ("golden_motion_encoder", "tokens") in checked
    assert ("golden_unet_step", "noise_pred") in checked
    assert ("golden_unet_step", "noise_pred_no_reference_zero_motion") in checked
    failures = [str(r) for r in results if not r.ok]
    assert not failures, "\n".join(failures)


def test_cli_reports_and_exits_zero(fixtures_dir, capsys):
    assert check_fixtures.main([str(fixtures_dir), "--tag", "golden"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "noise_pred" in out


def test_cli_fails_cleanly_for_an_unknown_tag(fixtures_dir, capsys):
    assert check_fixtures.main([str(fixtures_dir), "--tag", "nosuchtag"]) == 2
    assert "nosuchtag.json" in capsys.readouterr().err
