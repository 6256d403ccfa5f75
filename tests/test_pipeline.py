"""The animation pipeline on tiny rule-weighted models (CPU, float32)."""

import json

import numpy as np
import pytest
import torch
from conftest import random_condition, random_motion

from xnemo_core.settings import AnimationSettings, SettingError
from xnemo_core.testing import check_fixtures

FRAMES = 6


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline


@pytest.fixture(scope="module")
def condition(pipeline):
    return random_condition(pipeline, (80, 72))


@pytest.fixture(scope="module")
def motion():
    return random_motion(FRAMES)


def settings(**overrides) -> AnimationSettings:
    base = dict(steps=2, height=64, width=64, context_frames=4, context_overlap=1)
    return AnimationSettings(**{**base, **overrides})


def test_same_seed_same_latents_other_seed_other_latents(pipeline, condition, motion):
    first = pipeline.denoise(condition, motion, settings(seed=3))
    again = pipeline.denoise(condition, motion, settings(seed=3))
    other = pipeline.denoise(condition, motion, settings(seed=4))
    assert first.shape == (1, 4, FRAMES, 8, 8)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-2


def test_batched_windows_equal_one_window_at_a_time(pipeline, condition, motion):
    one = pipeline.denoise(condition, motion, settings(window_batch=1))
    batched = pipeline.denoise(condition, motion, settings(window_batch=3))
    # A batch of windows sums its products in another order on some CPUs' kernels: fp32 rounding only.
    torch.testing.assert_close(batched, one, rtol=1e-4, atol=5e-4)


def test_injected_offsets_change_the_windows_and_the_result(pipeline, condition, motion):
    noise = torch.randn(1, 4, FRAMES, 8, 8)
    zero = pipeline.denoise(condition, motion, settings(), noise=noise, offsets=[0, 0])
    shifted = pipeline.denoise(condition, motion, settings(), noise=noise, offsets=[2, 2])
    assert (zero - shifted).abs().max() > 1e-3


def test_long_schedule_and_unguided_sampling_run(pipeline, condition, motion):
    long = pipeline.denoise(condition, motion, settings(schedule="long"))
    unguided = pipeline.denoise(condition, motion, settings(guidance_scale=1.0))
    assert torch.isfinite(long).all() and torch.isfinite(unguided).all()
    assert (long - unguided).abs().max() > 1e-3


def test_progress_callback_sees_every_step_and_can_interrupt(pipeline, condition, motion):
    seen = []
    pipeline.denoise(condition, motion, settings(steps=3), on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.denoise(condition, motion, settings(steps=3), on_step=interrupt)


def test_partial_denoise_runs_the_tail_of_the_schedule_and_keeps_more_of_the_portrait(pipeline, condition, motion):
    seen = []
    pipeline.denoise(condition, motion, settings(steps=10, denoise=0.3), on_step=lambda done, total: seen.append(total))
    assert seen == [3, 3, 3]
    full, partial = (pipeline.denoise(condition, motion, settings(steps=10, denoise=d)) for d in (1.0, 0.3))
    portrait = condition.latents.float()[:, :, None]
    assert (partial - portrait).abs().mean() < (full - portrait).abs().mean()


def test_decode_gives_frames_in_unit_range(pipeline, condition, motion):
    video = pipeline.decode(pipeline.denoise(condition, motion[:2], settings()))
    assert video.shape == (2, 64, 64, 3) and video.dtype == torch.float32
    assert 0 <= video.min() and video.max() <= 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(height=100), "multiple of 64"),
        (dict(context_frames=40), "between 1 and 32"),
        (dict(schedule="fast"), "unknown schedule"),
        (dict(context_overlap=4), "overlap"),
        (dict(denoise=0.0), "denoise"),
    ],
)
def test_bad_settings_are_named(pipeline, condition, motion, overrides, message):
    with pytest.raises(ValueError, match=message):
        pipeline.denoise(condition, motion, settings(**overrides))


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"guidance_scale": float("inf")}, "guidance_scale"),
        ({"guidance_scale": -2.0}, "guidance_scale"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"denoise": float("nan")}, "denoise"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"steps": 0}, "steps"),
        ({"height": 0}, "height"),
        ({"decode_chunk": 0}, "decode_chunk"),
        ({"context_overlap": -1}, "context_overlap"),
    ],
)
def test_out_of_range_settings_are_refused_before_any_work(overrides, setting):
    with pytest.raises(SettingError) as error:
        settings(**overrides).validate()
    assert error.value.setting == setting


def test_animate_checks_the_settings_before_encoding_the_portrait(pipeline, motion, monkeypatch):
    monkeypatch.setattr(pipeline, "encode_reference", lambda *_: pytest.fail("the portrait was encoded first"))
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(SettingError) as error:
        pipeline.animate(image, image, motion, settings(context_frames=pipeline.models.config.max_window + 1))
    assert error.value.setting == "context_frames"


def test_the_whole_seed_range_is_accepted():
    for seed in (0, 2**63, 2**64 - 1):
        settings(seed=seed).validate(max_window=32)
        torch.Generator().manual_seed(seed)


def test_non_finite_motion_is_refused(pipeline, condition, motion):
    broken = motion.clone()
    broken[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        pipeline.denoise(condition, broken, settings())


def test_empty_motion_is_a_clear_error(pipeline, condition):
    with pytest.raises(ValueError, match="motion is empty"):
        pipeline.denoise(condition, torch.zeros(0, 32, 16), settings())


def test_golden_pipeline_check_catches_a_wrong_window_offset(fixtures_dir, golden_settings):
    shifted = json.loads(json.dumps(golden_settings))
    shifted["offset"] = golden_settings["offset"] + 1
    golden = check_fixtures.load_file(str(fixtures_dir / "golden_pipeline.safetensors"))
    results = check_fixtures.check_pipeline(golden, shifted, fixtures_dir / "golden_pipeline.safetensors")
    failed = {r.tensor for r in results if not r.ok}
    assert "video (mean abs)" in failed
