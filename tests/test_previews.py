"""Live previews: the predicted clean latents at every step, their latent-to-RGB factors, and the
Animate Portrait previews through ComfyUI's previewer contract (a stand-in here; the live test
checks the real one over ComfyUI's websocket)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_condition, random_motion
from diffusers import DDIMScheduler
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from nodes import comfy_bridge
from nodes.previews import AnimatedPreview, LivePreview
from xnemo_core import bundled
from xnemo_core.convert import write_bundle, write_parts
from xnemo_core.loading import load_models
from xnemo_core.pipeline import AnimationSettings
from xnemo_core.previews import LatentRGB, fit_on_synthetic_faces
from xnemo_core.sampling import OFFICIAL_SCHEDULER, predicted_clean
from xnemo_core.video import read_image

SETTINGS = AnimationSettings(steps=3, height=64, width=64, context_frames=4, context_overlap=1)
SD_FACTORS = LatentRGB(
    ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177)),
    (0.0, 0.0, 0.0),
)
"""ComfyUI's latent2rgb factors of the Stable Diffusion latent (comfy/latent_formats.py, SD15)."""


class Latent2RGBStandIn:
    """ComfyUI's ``Latent2RGBPreviewer`` contract: the first latent of a batch → a PIL image."""

    def __init__(self, latent_rgb: LatentRGB):
        self.latent_rgb = latent_rgb

    def decode_latent_to_preview(self, x0):
        rgb = ((self.latent_rgb.to_rgb(x0[0]) + 1) / 2).clamp(0, 1)
        return Image.fromarray((rgb * 255).to(torch.uint8).numpy())

    def decode_latent_to_preview_image(self, preview_format, x0):
        return (preview_format, self.decode_latent_to_preview(x0), 512)


def test_each_step_hands_over_its_predicted_clean_latents_and_sampling_is_unchanged(tiny_pipeline):
    condition = random_condition(tiny_pipeline, (64, 64))
    motion = random_motion(6)
    seen = []
    without = tiny_pipeline.denoise(condition, motion, SETTINGS)
    with_previews = tiny_pipeline.denoise(condition, motion, SETTINGS, on_preview=lambda x0: seen.append(x0.clone()))
    assert torch.equal(without, with_previews), "previews never change the video"
    assert [tuple(x0.shape) for x0 in seen] == [(6, 4, 8, 8)] * SETTINGS.steps
    assert (seen[-1] - without[0].movedim(1, 0)).abs().mean() < (seen[0] - without[0].movedim(1, 0)).abs().mean()


def test_the_predicted_clean_latents_are_ddims_own():
    scheduler = DDIMScheduler(**OFFICIAL_SCHEDULER)
    scheduler.set_timesteps(10)
    latents, noise = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    timestep = scheduler.timesteps[4]
    expected = scheduler.step(noise, timestep, latents).pred_original_sample
    torch.testing.assert_close(predicted_clean(scheduler, latents, noise, timestep), expected)


def test_the_bundled_model_carries_factors_fitted_to_its_own_vae():
    models = load_models(bundled.MODEL, dtype="fp32")
    assert models.latent_rgb == fit_on_synthetic_faces(models.vae), "the stored factors are the fit's"
    portrait = torch.from_numpy(read_image(bundled.DEMO_PORTRAIT)).permute(2, 0, 1)[None].float() / 127.5 - 1
    portrait = torch.nn.functional.interpolate(portrait, (128, 128), mode="area")  # not among the fit's faces
    with torch.no_grad():
        latents = models.vae.encode(portrait).latent_dist.mean * models.vae.config.scaling_factor
    truth = torch.nn.functional.adaptive_avg_pool2d(portrait, latents.shape[-2:])[0].movedim(0, -1)
    fitted = (models.latent_rgb.to_rgb(latents[0]) - truth).abs().mean()
    stable_diffusions = (SD_FACTORS.to_rgb(latents[0]) - truth).abs().mean()
    assert fitted < 0.15 and fitted < stable_diffusions / 3


def test_conversion_keeps_the_factors_and_damaged_ones_are_named(tmp_path):
    models = load_models(bundled.MODEL, dtype="fp32")
    assert load_models(write_parts(models, tmp_path / "parts")[0].parent).latent_rgb == models.latent_rgb
    assert load_models(write_bundle(models, tmp_path / "bundle.safetensors")).latent_rgb == models.latent_rgb
    copy = Path(shutil.copytree(bundled.MODEL, tmp_path / "copy"))
    vae = copy / "xnemo_vae.safetensors"
    with safe_open(str(vae), "pt") as handle:
        metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(vae), metadata=metadata | {"latent_rgb": json.dumps({"factors": [[1, 2]]})})
    with pytest.raises(ValueError, match=f"{vae}: damaged 'latent_rgb' metadata"):
        load_models(copy)


@pytest.mark.parametrize("model", ["tiny", "bundled"])
def test_animate_portrait_shows_a_preview_of_the_right_size_at_each_step(model, tiny_model_folder, monkeypatch):
    from test_nodes import animate_inputs, run

    folder = tiny_model_folder if model == "tiny" else bundled.MODEL
    monkeypatch.setenv("XNEMO_MODELS", str(folder.parent))
    (loaded,) = run("LoadXNeMo", model=folder.name, precision="fp32")
    asked = []
    monkeypatch.setattr(
        comfy_bridge, "previewer", lambda latent_rgb: asked.append(latent_rgb) or Latent2RGBStandIn(latent_rgb or SD_FACTORS)
    )
    shown = []
    monkeypatch.setattr(comfy_bridge.Progress, "__call__", lambda self, done, total: shown.append(self.preview.take()))
    inputs = animate_inputs(loaded, torch.rand(1, 64, 64, 3), _tiny_motion(loaded))
    run("AnimatePortrait", **inputs)
    assert len(shown) == inputs["steps"] and all(image[0] == "JPEG" and image[1].size == (8, 8) for image in shown)
    assert asked == [None if model == "tiny" else loaded.models.latent_rgb], "the model's own latent space"


def _tiny_motion(loaded):
    from xnemo_core.motion import MotionLatent

    return MotionLatent(random_motion(4), loaded.motion_id.current)


def test_previews_off_cost_nothing(tiny_model_folder, monkeypatch):
    from test_nodes import animate_inputs, run

    from xnemo_core.pipeline import XNeMoPipeline

    monkeypatch.setenv("XNEMO_MODELS", str(tiny_model_folder.parent))
    (loaded,) = run("LoadXNeMo", model=tiny_model_folder.name, precision="fp32")
    handed = []
    denoise = XNeMoPipeline.denoise
    monkeypatch.setattr(
        XNeMoPipeline, "denoise", lambda self, *args: handed.append(args[-1]) or denoise(self, *args)
    )
    run("AnimatePortrait", **animate_inputs(loaded, torch.rand(1, 64, 64, 3), _tiny_motion(loaded)))
    assert handed == [None], "outside ComfyUI (or with previews off) the pipeline computes no preview"


def test_animated_previews_announce_the_clip_then_send_indexed_frames_at_their_rate(monkeypatch):
    events, frames = [], []
    monkeypatch.setattr(comfy_bridge, "send_event", lambda name, data: events.append((name, data)))
    monkeypatch.setattr(comfy_bridge, "send_preview_frame", lambda index, jpeg: frames.append((index, jpeg)))
    now = [100.0]
    animated = AnimatedPreview(Latent2RGBStandIn(SD_FACTORS), rate=8, clock=lambda: now[0])
    latents = torch.randn(5, 4, 8, 8)
    animated.send(latents)
    assert events == [("VHS_latentpreview", {"length": 5, "rate": 8})]
    assert [index for index, _ in frames] == [0, 1, 2, 3, 4], "the whole clip first"
    assert all(jpeg.startswith(b"\xff\xd8") for _, jpeg in frames)
    now[0] += 0.25  # two frames' time at 8 a second
    animated.send(latents)
    now[0] += 0.05  # less than a frame's time
    animated.send(latents)
    assert [index for index, _ in frames[5:]] == [0, 1] and len(events) == 1


def test_a_live_preview_shows_the_next_frame_at_each_step():
    preview = LivePreview(Latent2RGBStandIn(SD_FACTORS))
    latents = torch.randn(3, 4, 8, 8)
    latents[1] = 5  # a bright frame
    images = []
    for _ in range(4):
        preview(latents)
        images.append(np.asarray(preview.take()[1]))
    assert preview.take() is None, "each step's image is shown once"
    assert images[1].mean() > images[0].mean() and np.array_equal(images[0], images[3])
