"""Samplers, guidance on part of the schedule, reused deep features and the speed presets, on the
tiny model through the windowed, guided pipeline (CPU, float32)."""

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import random_condition, random_motion

from xnemo_core import sampling
from xnemo_core.models.reference import capture_reference, project_reference
from xnemo_core.sampling import SAMPLERS, SPEED_PRESETS, describe_preset, preset_settings
from xnemo_core.settings import AnimationSettings, SettingError
from xnemo_core.window_prediction import DeepFeatureCache

FRAMES = 7
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline


@pytest.fixture(scope="module")
def condition(pipeline):
    return random_condition(pipeline, (64, 64))


@pytest.fixture(scope="module")
def motion():
    return random_motion(FRAMES)


def settings(**overrides) -> AnimationSettings:
    """Three overlapping windows of 4 frames over 7 (wrapping), guided."""
    base = dict(steps=4, height=64, width=64, context_frames=4, context_overlap=1)
    return AnimationSettings(**{**base, **overrides})


class DenoiserCalls:
    """Wraps the pipeline's denoiser and records each call's rows and whether it ran whole."""

    def __init__(self, pipeline, monkeypatch):
        self.calls = []
        denoiser = pipeline.denoiser

        def record(latents, *args, deep_features=None, keep_deep=False, **kwargs):
            self.calls.append({"rows": len(latents), "whole": deep_features is None, "keep": keep_deep})
            return denoiser(latents, *args, deep_features=deep_features, keep_deep=keep_deep, **kwargs)

        record.video_denoised = denoiser.video_denoised
        monkeypatch.setattr(pipeline, "denoiser", record)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_every_sampler_runs_the_windowed_guided_schedule(pipeline, condition, motion, sampler, denoise):
    latents = pipeline.denoise(condition, motion, settings(sampler=sampler, denoise=denoise))
    assert latents.shape == (1, 4, FRAMES, 8, 8) and torch.isfinite(latents).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("denoise", [1.0, 0.6])
def test_an_oracle_denoiser_leads_every_sampler_to_its_clean_latents(
    pipeline, condition, motion, monkeypatch, sampler, denoise
):
    """A denoiser that knows the clean latents predicts the exact noise of any noisy input; every
    sampler, from any start, through overlapping windows and guidance, must end on those latents.
    (The clean frames are all alike, so the oracle need not know which frames a window holds.)"""
    clean = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    alphas = sampling.make_scheduler("ddim").alphas_cumprod

    def oracle(latents, timestep, *args, **kwargs):
        alpha = alphas[int(timestep)]
        return (latents - alpha.sqrt() * clean) / (1 - alpha).sqrt()

    oracle.video_denoised = lambda: None
    monkeypatch.setattr(pipeline, "denoiser", oracle)
    result = pipeline.denoise(condition, motion, settings(sampler=sampler, denoise=denoise))
    torch.testing.assert_close(result, clean.expand_as(result), rtol=1e-4, atol=1e-4)


def test_samplers_differ_and_converge_towards_each_other_with_more_steps(pipeline, condition, motion):
    def gap(steps):
        ddim, dpm = (pipeline.denoise(condition, motion, settings(sampler=s, steps=steps)) for s in ("ddim", "dpm++2m"))
        return (ddim - dpm).abs().mean().item()

    few, many = gap(3), gap(30)
    assert few > 1e-3
    assert many < few


def test_a_multistep_solver_steps_once_per_step_on_the_whole_guided_average(pipeline, condition, motion, monkeypatch):
    """Its history must hold whole-video predictions: one step call per step, for every frame."""
    real = sampling.make_scheduler
    seen = []

    def spying(name):
        scheduler = real(name)
        step = scheduler.step

        def recorded(model_output, timestep, sample, **kwargs):
            seen.append((tuple(model_output.shape), tuple(sample.shape)))
            return step(model_output, timestep, sample, **kwargs)

        scheduler.step = recorded
        return scheduler

    monkeypatch.setattr("xnemo_core.pipeline.make_scheduler", spying)
    pipeline.denoise(condition, motion, settings(sampler="unipc", steps=5))
    assert seen == [((1, 4, FRAMES, 8, 8), (1, 4, FRAMES, 8, 8))] * 5


def test_guidance_runs_on_the_first_steps_only(pipeline, condition, motion, monkeypatch):
    calls = DenoiserCalls(pipeline, monkeypatch)
    pipeline.denoise(condition, motion, settings(steps=4, guidance_until=0.5))
    windows = 3
    assert [c["rows"] for c in calls.calls] == [2] * (2 * windows) + [1] * (2 * windows)
    trimmed = pipeline.denoise(condition, motion, settings(steps=4, guidance_until=0.5))
    full = pipeline.denoise(condition, motion, settings(steps=4))
    assert (trimmed - full).abs().max() > 1e-4


def test_guidance_until_one_and_no_deep_cache_are_todays_sampling_exactly(pipeline, condition, motion, monkeypatch):
    calls = DenoiserCalls(pipeline, monkeypatch)
    explicit = pipeline.denoise(condition, motion, settings(guidance_until=1.0, deep_cache_interval=1, sampler="ddim"))
    assert all(c["rows"] == 2 and c["whole"] and not c["keep"] for c in calls.calls)
    assert torch.equal(explicit, pipeline.denoise(condition, motion, settings()))


@torch.no_grad()
def test_outer_layers_on_kept_deep_features_equal_the_whole_denoiser(tiny_models):
    unet = tiny_models.denoising_unet
    generator = torch.Generator().manual_seed(0)
    clip = torch.randn(1, 1, unet.config.cross_attention_dim, generator=generator)
    reference = project_reference(unet, capture_reference(tiny_models.reference_unet, torch.randn(1, 4, 8, 8), clip))
    latents = torch.randn(2, 4, 3, 8, 8, generator=generator)
    motion = torch.randn(2, 3, 32, 16, generator=generator)
    inputs = (latents, torch.tensor(400), torch.cat([torch.zeros_like(clip), clip]), motion, reference, slice(1, None))
    whole, deep = unet(*inputs, keep_deep=True)
    assert torch.equal(whole, unet(*inputs))
    assert deep.shape[0] == 2 * 3 and deep.shape[-2:] == (8, 8)
    torch.testing.assert_close(unet(*inputs, deep_features=deep), whole, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unet(*inputs, deep_features=deep * 0), whole, atol=1e-3)


def test_deep_cache_runs_the_whole_denoiser_every_interval_steps(pipeline, condition, motion, monkeypatch):
    calls = DenoiserCalls(pipeline, monkeypatch)
    cached = pipeline.denoise(condition, motion, settings(steps=5, deep_cache_interval=2, guidance_until=0.5))
    windows = 3
    whole_steps = [
        all(c["whole"] and c["keep"] for c in calls.calls[i * windows : (i + 1) * windows]) for i in range(5)
    ]
    assert whole_steps == [True, False, True, False, True]
    assert all(not c["whole"] for i in (1, 3) for c in calls.calls[i * windows : (i + 1) * windows])
    assert torch.isfinite(cached).all()
    exact = pipeline.denoise(condition, motion, settings(steps=5, guidance_until=0.5))
    assert 1e-5 < (cached - exact).abs().mean() < 0.5 * exact.abs().mean()


def test_kept_features_are_the_average_of_the_windows_that_saw_each_frame():
    cache = DeepFeatureCache(num_frames=5)
    windows = torch.tensor([[0, 1, 2], [2, 3, 4]])
    rows = 2
    deep = torch.arange(rows * 2 * 3, dtype=torch.float32).repeat_interleave(4).reshape(rows * 2 * 3, 1, 2, 2)
    cache.add(windows, deep, rows)
    cache.finish_refresh()
    # rows × windows × frames ordering: values 0-2 (uncond, first window), 3-5 (uncond, second), ...
    assert cache.features[0, :, 0, 0, 0].tolist() == [0, 1, (2 + 3) / 2, 4, 5]
    assert cache.features[1, :, 0, 0, 0].tolist() == [6, 7, (8 + 9) / 2, 10, 11]
    shifted = torch.tensor([[4, 0, 1]])
    assert cache.gather(shifted, rows=1)[:, 0, 0, 0].tolist() == [11, 6, 7]
    assert cache.gather(shifted, rows=2)[:, 0, 0, 0].tolist() == [5, 0, 1, 11, 6, 7]


def test_a_refresh_replaces_the_kept_features_in_the_denoisers_dtype():
    cache = DeepFeatureCache(num_frames=5)
    windows = torch.tensor([[0, 1, 2], [2, 3, 4]])
    first = torch.ones(2 * 2 * 3, 1, 2, 2, dtype=torch.float16)
    second = torch.arange(2 * 2 * 3, dtype=torch.float16)[:, None, None, None].expand(-1, 1, 2, 2)
    for deep in (first, second):
        cache.add(windows, deep, rows=2)
        cache.finish_refresh()
    assert cache.features.dtype == torch.float16
    assert cache.features[1, :, 0, 0, 0].tolist() == [6, 7, (8 + 9) / 2, 10, 11]  # nothing of the first


@pytest.mark.parametrize(
    "overrides, setting",
    [
        (dict(sampler="euler"), "sampler"),
        (dict(guidance_until=0), "guidance_until"),
        (dict(guidance_until=1.5), "guidance_until"),
        (dict(deep_cache_interval=0), "deep_cache_interval"),
    ],
)
def test_bad_acceleration_settings_are_named(overrides, setting):
    with pytest.raises(SettingError) as error:
        settings(**overrides).validate()
    assert error.value.setting == setting


def test_each_preset_is_a_set_of_valid_settings_and_exact_is_the_official_sampling():
    assert preset_settings("exact") == {"sampler": "ddim", "guidance_until": 1.0, "deep_cache_interval": 1}
    for name in SPEED_PRESETS:
        AnimationSettings(**preset_settings(name)).validate()
    with pytest.raises(ValueError, match="unknown speed preset 'ludicrous'"):
        preset_settings("ludicrous")


def test_the_readme_table_documents_each_preset_as_it_is():
    """Each preset's row in the README's speed table names its settings in the words of describe_preset."""
    rows = {}
    for line in README.read_text().splitlines():
        if match := re.match(r"\| `(\w+)` \| ([^|]+) \|", line):
            rows[match[1]] = match[2].strip()
    assert {name: rows.get(name) for name in SPEED_PRESETS} == {name: describe_preset(name) for name in SPEED_PRESETS}


@pytest.mark.parametrize("preset", SPEED_PRESETS)
def test_each_preset_runs_the_windowed_guided_schedule_it_documents(pipeline, condition, motion, monkeypatch, preset):
    calls = DenoiserCalls(pipeline, monkeypatch)
    chosen = settings().with_preset(preset)
    assert torch.isfinite(pipeline.denoise(condition, motion, chosen)).all()
    guided_steps = math.ceil(preset_settings(preset)["guidance_until"] * chosen.steps)
    interval = preset_settings(preset)["deep_cache_interval"]
    expected = [(2 if step < guided_steps else 1, step % interval == 0) for step in range(chosen.steps) for _ in "abc"]
    assert [(c["rows"], c["whole"]) for c in calls.calls] == expected, "three windows a step"
