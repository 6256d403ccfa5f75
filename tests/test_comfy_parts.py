"""LoadXNeMo with ComfyUI's own VAE and CLIP vision objects (stand-ins following their contract)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from offline_comfy import ComfyLikeCLIPVision, ComfyLikeVAE
from test_nodes import animate_inputs

from nodes import animate, loader
from nodes.motion import extract
from xnemo_core.checkpoints import CheckpointError, read_metadata


@pytest.fixture(scope="module")
def models(tiny_model_folder):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XNEMO_MODELS", str(tiny_model_folder.parent))
        (own,) = loader.load(tiny_model_folder.name, "fp32")
        base = own.models
        comfy_vae, comfy_clip = ComfyLikeVAE(base.vae), ComfyLikeCLIPVision(base.image_encoder)
        (borrowed,) = loader.load(tiny_model_folder.name, "fp32", vae=comfy_vae, clip_vision=comfy_clip)
    return own, borrowed


def test_comfy_vae_and_clip_vision_give_the_same_animation(models):
    own, borrowed = models
    assert type(borrowed.models.vae).__name__ == "ComfyVAE"
    driving = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    reference = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    results = []
    for model in (own, borrowed):
        motion, *_ = extract(model, driving, "none")
        results.append(animate.animate(**animate_inputs(model, reference, motion, seed=3)))
    (own_frames, *_), (borrowed_frames, *_) = results
    assert own_frames.shape == borrowed_frames.shape == (3, 64, 64, 3)
    torch.testing.assert_close(borrowed_frames, own_frames, atol=1e-4, rtol=0)


def test_vae_with_other_latent_channels_is_refused(models, tiny_model_folder, monkeypatch):
    own, _ = models
    monkeypatch.setenv("XNEMO_MODELS", str(tiny_model_folder.parent))
    with pytest.raises(CheckpointError, match="16 latent channels, X-NeMo expects 4"):
        loader.load(tiny_model_folder.name, "fp32", vae=ComfyLikeVAE(own.models.vae, latent_channels=16))


class ComfyLikeClipVisionModel(ComfyLikeCLIPVision):
    """As ComfyUI's ``ClipVisionModel``, whose ``model.visual_projection`` tells the embedding width."""

    def __init__(self, encoder, width: int):
        super().__init__(encoder)
        self.model = torch.nn.Module()
        self.model.visual_projection = torch.nn.Linear(8, width, bias=False)


def test_a_clip_vision_of_another_width_is_refused_at_load_naming_both_widths(models, tiny_model_folder, monkeypatch):
    own, _ = models
    monkeypatch.setenv("XNEMO_MODELS", str(tiny_model_folder.parent))
    expected = own.models.config.unet["cross_attention_dim"]
    wide = ComfyLikeClipVisionModel(own.models.image_encoder, width=1024)
    message = f"the model expects {expected}-wide CLIP image embeddings, the CLIP vision model gives 1024-wide"
    with pytest.raises(CheckpointError, match=message):
        loader.load(tiny_model_folder.name, "fp32", clip_vision=wide)
    fitting = ComfyLikeClipVisionModel(own.models.image_encoder, width=expected)
    (loaded,) = loader.load(tiny_model_folder.name, "fp32", clip_vision=fitting)
    assert loaded.models.image_encoder.clip_vision is fitting


def test_comfyui_names_the_model_x_nemo(models):
    own, _ = models
    assert type(own.managed.container).__name__ == "XNeMo"
    assert set(own.managed.container) == set(own.models.modules())


def test_a_comfyui_vae_is_scaled_as_the_vae_it_replaces(tiny_model_folder, tmp_path, monkeypatch):
    """The denoiser was trained on latents scaled by its own VAE's factor, whatever VAE encodes them."""
    model = tmp_path / "odd-scale"
    shutil.copytree(tiny_model_folder, model)
    vae_file = model / "xnemo_vae.safetensors"
    tensors, metadata = load_file(vae_file), read_metadata(vae_file)
    config = json.loads(metadata["config"]) | {"scaling_factor": 0.5}
    save_file(tensors, vae_file, metadata | {"config": json.dumps(config)})
    monkeypatch.setenv("XNEMO_MODELS", str(tmp_path))
    (own,) = loader.load("odd-scale", "fp32")
    (borrowed,) = loader.load("odd-scale", "fp32", vae=ComfyLikeVAE(own.models.vae))
    assert own.models.vae.config.scaling_factor == borrowed.models.vae.config.scaling_factor == 0.5
