"""Training smoke test on the CPU: both stages at the tiny size move the right weights, log their
losses, export a model folder the loader reads, and resume."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xnemo_core.__main__ import main
from xnemo_core.loading import load_models
from xnemo_core.testing.synthetic_weights import preset_models
from xnemo_core.train.gan import DualDiscriminator, generator_loss
from xnemo_core.train.landmarks import (
    LandmarkConfig,
    calibrate_token_head,
    calibration_clips,
    gaussian_heatmaps,
    peak_error,
)
from xnemo_core.train.runs import read_settings
from xnemo_core.train.trainer import TrainConfig, XNeMoTraining, initial_models, select_trained, train

SMALL = {"batch_size": 2, "log_every": 1, "synthetic_clips": 8, "clip_frames": 3, "size": 64}


def changed(before: dict, after: dict, temporal: bool) -> bool:
    return any(not torch.equal(before[key], after[key]) for key in before if ("temporal_modules." in key) == temporal)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    output = tmp_path_factory.mktemp("stage1")
    records = []
    folder = train(TrainConfig(str(output), steps=3, checkpoint_every=3, **SMALL), on_log=records.append)
    return output, folder, records


def test_stage_one_trains_encoder_and_spatial_weights_and_exports_a_loadable_model(stage_one):
    _, folder, records = stage_one
    assert [r["step"] for r in records] == [1, 2, 3]
    for name in ("diffusion", "reconstruction", "gan", "critic"):
        values = [r[name] for r in records]
        assert all(torch.isfinite(torch.tensor(values))) and len(set(values)) == 3, name
    start, trained = preset_models("tiny", device="cpu"), load_models(folder, dtype="fp32")
    assert changed(start.motion_encoder.state_dict(), trained.motion_encoder.state_dict(), temporal=False)
    before, after = start.denoising_unet.state_dict(), trained.denoising_unet.state_dict()
    assert changed(before, after, temporal=False)
    # Temporal modules start as the identity (zero output projection) and stay untouched.
    outputs = {key for key in after if "temporal_modules." in key and ".proj_out." in key}
    assert outputs and not any(after[key].any() for key in outputs)
    assert not changed({k: v for k, v in before.items() if k not in outputs}, after, temporal=True)
    assert torch.equal(start.vae.encoder.conv_in.weight, trained.vae.encoder.conv_in.weight)  # frozen


def test_stage_two_trains_only_the_temporal_modules(stage_one, tmp_path):
    _, folder, _ = stage_one
    config = TrainConfig(str(tmp_path), init_from=str(folder), stage=2, steps=2, gradient_checkpointing=True, **SMALL)
    start, trained = load_models(folder, dtype="fp32"), load_models(train(config), dtype="fp32")
    before, after = start.denoising_unet.state_dict(), trained.denoising_unet.state_dict()
    assert changed(before, after, temporal=True) and not changed(before, after, temporal=False)
    assert torch.equal(start.reference_unet.conv_in.weight, trained.reference_unet.conv_in.weight)


def test_training_resumes_from_its_state(stage_one):
    output, _, _ = stage_one
    records = []
    train(TrainConfig(str(output), steps=4, checkpoint_every=4, **SMALL), on_log=records.append)
    assert [r["step"] for r in records] == [4]
    lines = (output / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    assert [f.name for f in (output / "checkpoints").iterdir()] == ["step_4"]  # the default keeps the newest only


def test_checkpoints_beyond_the_limit_are_removed_oldest_first(tmp_path):
    config = TrainConfig(str(tmp_path), steps=3, checkpoint_every=1, checkpoints_total_limit=2, **SMALL)
    train(config)
    assert sorted(f.name for f in (tmp_path / "checkpoints").iterdir()) == ["step_2", "step_3"]


def test_training_accumulates_clips_and_schedules(tmp_path):
    """The X-NeMo loop (its GAN's two optimisers included) under accumulation, clipping and warm-up."""
    records = []
    config = TrainConfig(
        str(tmp_path),
        steps=2,
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=1,
        **SMALL | {"batch_size": 1},
    )
    train(config, on_log=records.append)
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["critic"]) for r in records)


def test_config_file_with_an_unknown_setting_is_refused(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("output_dir: out\nsteps: 5\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="unknown training settings \\['learning_rat'\\]"):
        read_settings(TrainConfig, path)
    path.write_text("output_dir: out\nsteps: 5\n")
    assert read_settings(TrainConfig, path, stage=2).steps == 5


def test_train_command_takes_a_config_file_and_overrides(tmp_path, capsys):
    from xnemo_core.__main__ import main

    config = tmp_path / "train.yaml"
    config.write_text("steps: 1\nbatch_size: 1\nsynthetic_clips: 2\nclip_frames: 2\nsize: 64\n")
    assert main(["train", "--config", str(config), "--output-dir", str(tmp_path / "run"), "--set", "log_every=1"]) == 0
    assert (tmp_path / "run" / "model" / "xnemo_motion_encoder.safetensors").is_file()
    assert main(["train", "--set", "stage=3", "--output-dir", str(tmp_path / "bad")]) == 2
    assert "stage must be 1 or 2" in capsys.readouterr().err


def test_a_trained_vae_replaces_the_model_vae_and_is_exported_with_its_scale(tmp_path):
    from xnemo_core.__main__ import main

    vae_settings = ["--set", "size=64", "--set", "steps=2", "--set", "batch_size=2", "--set", "clip_frames=2"]
    assert main(["train-vae", "--output-dir", str(tmp_path / "vae"), *vae_settings, "--set", "synthetic_clips=4"]) == 0
    vae_config = json.loads((tmp_path / "vae" / "vae" / "config.json").read_text())
    assert vae_config["block_out_channels"] == [32, 64, 64, 64] and vae_config["scaling_factor"] > 0
    config = TrainConfig(str(tmp_path / "x"), steps=1, vae_from=str(tmp_path / "vae" / "vae"), **SMALL)
    trained = load_models(train(config), dtype="fp32")
    assert list(trained.vae.config.block_out_channels) == [32, 64, 64, 64]
    assert trained.vae.config.scaling_factor == pytest.approx(vae_config["scaling_factor"])


def test_the_spatial_comparison_model_trains_loads_and_follows_its_driving_frames(tmp_path):
    from xnemo_core.models.spatial_guider import SpatialMotionGuider
    from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline

    config = TrainConfig(str(tmp_path), motion_guidance="spatial", steps=2, learning_rate=1e-2, **SMALL)
    models = load_models(train(config), dtype="fp32")
    assert models.config.motion_guidance == "spatial" and isinstance(models.motion_encoder, SpatialMotionGuider)
    pipeline = XNeMoPipeline(models)
    rng = np.random.default_rng(0)
    portrait, drivers = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (2, 2, 64, 64, 3))
    condition = pipeline.encode_reference(portrait[0], portrait[0], 64, 64)
    settings = AnimationSettings(steps=1, height=64, width=64, context_frames=2, context_overlap=0)
    latents = [pipeline.denoise(condition, pipeline.encode_motion(d.astype(np.uint8)), settings) for d in drivers]
    assert latents[0].shape == (1, 4, 2, 8, 8)
    assert (latents[0] - latents[1]).abs().max() > 1e-4


def test_decoder_only_vae_training_keeps_the_latent_space(tiny_model_folder, tmp_path):
    from xnemo_core.loading import load_vae
    from xnemo_core.train.vae import VAETrainConfig, train_vae

    settings = dict(size=64, steps=2, batch_size=2, clip_frames=2, synthetic_clips=4, single_frame_fraction=0.5)
    config = VAETrainConfig(str(tmp_path), init_from=str(tiny_model_folder), train_encoder=False, **settings)
    (start, _), (tuned, tuned_config) = load_vae(tiny_model_folder), load_vae(train_vae(config))
    assert tuned_config["scaling_factor"] == start.config.scaling_factor
    assert all(
        torch.equal(a, b) for a, b in zip(start.encoder.state_dict().values(), tuned.encoder.state_dict().values())
    )
    assert not torch.equal(start.decoder.conv_out.weight, tuned.decoder.conv_out.weight)


def test_stage_one_runs_no_temporal_modules_and_stage_two_does():
    models = preset_models("tiny", device="cpu")  # rule-made temporal modules: not the identity
    unet = models.denoising_unet
    latents, motion = torch.randn(1, 4, 1, 8, 8), torch.randn(1, 1, 32, 16)
    clip = torch.randn(1, 1, unet.config.cross_attention_dim)

    def run(stage):
        select_trained(models, TrainConfig("unused", stage=stage))
        with torch.no_grad():
            return unet(latents, 10, clip, motion)

    video, image = run(2), run(1)
    assert not torch.allclose(video, image, atol=1e-4)
    assert torch.equal(run(2), video)


def test_min_snr_weighting_lowers_only_the_low_noise_timesteps():
    models = preset_models("tiny", device="cpu")
    plain, weighted = (XNeMoTraining(models, TrainConfig("unused", snr_gamma=gamma)) for gamma in (None, 5.0))
    prediction, noise = torch.ones(1, 4, 1, 8, 8), torch.zeros(1, 4, 8, 8)  # an error of 1 everywhere

    def loss(network, timestep):
        return float(network._diffusion_loss(prediction, noise, torch.tensor([timestep])))

    assert loss(plain, 10) == loss(plain, 900) == 1.0
    assert loss(weighted, 900) == 1.0 and loss(weighted, 10) < 0.1


def test_training_can_watch_its_motion_encoding_and_the_denoiser_reliance_on_it(tmp_path):
    records = []
    config = TrainConfig(str(tmp_path), steps=2, checkpoint_every=2, watch_motion=True, **SMALL)
    train(config, on_log=records.append)
    watched = [r for r in records if "motion_identity_share" in r]
    assert len(watched) == 1 and 0 < watched[0]["motion_identity_share"] < 1
    assert np.isfinite([watched[0]["motion_reliance_self"], watched[0]["motion_reliance_cross"]]).all()


def test_motion_modules_can_restart_as_the_identity(tiny_model_folder):
    models = initial_models(TrainConfig("unused", init_from=str(tiny_model_folder), reset_motion_modules=True))
    projections = {k: v for k, v in models.denoising_unet.state_dict().items() if k.endswith("proj_out.weight")}
    motion = [v for k, v in projections.items() if "motion_modules." in k]
    assert motion and all(not v.any() for v in motion)
    assert any(v.any() for k, v in projections.items() if "motion_modules." not in k)


def test_heatmaps_peak_at_their_landmarks():
    points = torch.tensor([[[0.25, 0.5], [0.8, 0.1]]])
    heatmaps = gaussian_heatmaps(points, 16, sigma=1.0)
    assert heatmaps.shape == (1, 2, 16, 16) and heatmaps.amax(dim=(2, 3)).min() > 0.75
    assert float(peak_error(heatmaps, points)) < 0.75  # argmax finds the pixel: within half a pixel per axis
    assert abs(float(peak_error(heatmaps, points + torch.tensor([2 / 16, 0]))) - 2) < 0.5


def test_motion_pretraining_replaces_only_the_encoder_and_stage_one_can_keep_its_alignment(tiny_model_folder, tmp_path):
    output = tmp_path / "landmarks"
    settings = {"init_from": tiny_model_folder, "size": 64, "steps": 12, "batch_size": 4, "calibration_people": 24}
    arguments = [f"--set={key}={value}" for key, value in settings.items()]
    assert main(["pretrain-motion", "--output-dir", str(output), "--set=log_every=1", *arguments]) == 0
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] and len(records[-1]["motion_to_identity_variance"]) == 16
    folder = output / "model"
    start, pretrained = load_models(tiny_model_folder, dtype="fp32"), load_models(folder, dtype="fp32")
    assert torch.equal(start.denoising_unet.conv_in.weight, pretrained.denoising_unet.conv_in.weight)
    assert not torch.equal(start.motion_encoder.model.l0.weight, pretrained.motion_encoder.model.l0.weight)
    clips = calibration_clips(24, 64, LandmarkConfig.seed + 1)
    with torch.no_grad():
        tokens = torch.stack([pretrained.motion_encoder(F.interpolate(clip, size=64)) for clip in clips])
    assert 0.4 < float(tokens.std(dim=1).mean()) < 0.6  # its calibration; untouched heads give ~0.002

    stage_one = TrainConfig(
        str(tmp_path / "stage1"), init_from=str(folder), steps=2, train_motion_backbone=False, **SMALL
    )
    trained = load_models(train(stage_one), dtype="fp32")
    before, after = pretrained.motion_encoder.model, trained.motion_encoder.model
    assert all(torch.equal(a, b) for a, b in zip(before.alignment_parameters(), after.alignment_parameters()))
    assert not torch.equal(before.fc.weight, after.fc.weight)


class _FeatureEncoder(nn.Module):
    """Stands in for a motion encoder whose head inputs are the 2×2×2 "faces" themselves."""

    face_size = 2

    def __init__(self):
        super().__init__()
        self.final_proj = nn.Linear(8, 64)

    def fused_features(self, faces):
        return faces.flatten(1)


def test_token_head_calibration_keeps_what_varies_within_a_person_and_drops_who_it_is():
    generator = torch.Generator().manual_seed(0)
    people, frames = 400, 16
    who = torch.randn(people, 1, 8, generator=generator) * torch.tensor([3.0, 3, 3, 3, 3, 0, 0, 1])
    expressions = torch.randn(frames, 8, generator=generator) * torch.tensor([0.0, 0, 0, 0, 0, 1, 1, 0.3])
    features = who + expressions  # every person performs the same expressions
    encoder = _FeatureEncoder()
    ratios = calibrate_token_head(encoder, features.view(people, frames, 2, 2, 2), spread=0.5, directions=2)
    with torch.no_grad():
        tokens = encoder.final_proj(features)
    assert 0.45 < float(tokens.std(dim=1).mean()) < 0.55
    assert float(tokens.std(dim=0).mean()) < 0.05  # the same expression by different people: one encoding
    assert ratios[0] > ratios[1] > 1  # motion variance over the (shrunk) identity variance


def test_the_generator_loss_reaches_the_fakes_but_not_the_discriminator():
    discriminator = DualDiscriminator(channels=8)
    fakes = tuple(torch.rand(2, 3, 32, 32, requires_grad=True) for _ in range(2))
    loss = generator_loss(discriminator, fakes)
    plain = sum(torch.nn.functional.softplus(-logit).mean() for logit in discriminator(fakes))
    assert torch.allclose(loss, plain)
    loss.backward()
    assert all(fake.grad is not None and fake.grad.abs().sum() > 0 for fake in fakes)
    assert all(p.grad is None for p in discriminator.parameters())
