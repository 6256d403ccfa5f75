"""The tiny decoder (TAESD) on request: both published forms load strictly, the original file's
layers land where diffusers keeps them (checked against the original architecture, as ComfyUI
defines it), and the pipeline and the command line decode with it frame by frame."""

import json

import pytest
import torch
from conftest import random_condition, random_motion
from diffusers import AutoencoderTiny
from safetensors.torch import save_file
from taesd_original import original_encoder, save_original, write_taesd_files

from xnemo_core.checkpoints import CheckpointError
from xnemo_core.cli import main
from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
from xnemo_core.tiny_decoder import load_tiny_autoencoder, load_tiny_decoder
from xnemo_core.video import read_frames


@pytest.fixture(scope="module")
def original_file(tmp_path_factory):
    _, decoder = write_taesd_files(folder := tmp_path_factory.mktemp("vae_approx"))
    return decoder, folder / "taesd_decoder.safetensors"


def test_the_original_file_decodes_as_its_own_architecture_does(original_file):
    decoder, path = original_file
    latents = torch.randn(2, 4, 8, 8) * 2
    with torch.no_grad():
        expected = decoder(latents) * 2 - 1
        decoded = load_tiny_decoder(path).decode(latents).sample
    torch.testing.assert_close(decoded, expected, rtol=1e-5, atol=1e-5)


def test_a_diffusers_folder_loads_and_a_damaged_file_is_named(original_file, tmp_path):
    _, path = original_file
    folder = tmp_path / "taesd"
    load_tiny_decoder(path).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "AutoencoderTiny"
    reloaded, original = load_tiny_decoder(folder), load_tiny_decoder(path)
    pairs = zip(reloaded.decoder.state_dict().values(), original.decoder.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)
    wrong = tmp_path / "not_taesd.safetensors"
    save_file({"decoder.weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(CheckpointError, match="is not TAESD's"):
        load_tiny_decoder(wrong)
    partial = tmp_path / "partial.safetensors"
    save_file({"1.weight": torch.zeros(64, 4, 3, 3)}, str(partial))
    with pytest.raises(CheckpointError, match="tiny decoder"):
        load_tiny_decoder(partial)


def test_the_pipeline_decodes_with_it_frame_by_frame(tiny_models, original_file):
    _, path = original_file
    pipeline = XNeMoPipeline(tiny_models, decoder=load_tiny_decoder(path))
    settings = AnimationSettings(steps=1, height=64, width=64, context_frames=4, context_overlap=1)
    latents = pipeline.denoise(random_condition(pipeline, (64, 64)), random_motion(5), settings)
    frames = pipeline.decode(latents, chunk=3)
    assert frames.shape == (5, 64, 64, 3) and torch.isfinite(frames).all()
    alone = pipeline.decode(latents[:, :, 3:4], chunk=3)  # each frame decodes on its own
    torch.testing.assert_close(alone[0], frames[3])
    assert not torch.equal(frames, XNeMoPipeline(tiny_models).decode(latents, chunk=3)), "not the VAE's"


def test_the_command_line_takes_a_tiny_decoder(tiny_model_folder, original_file, tmp_path, capsys):
    _, path = original_file
    out = tmp_path / "tiny.mp4"
    args = ["animate", "--models", str(tiny_model_folder), "--out", str(out), "--frames", "3", "--steps", "1"]
    assert main([*args, "--size", "64", "--crop", "none", "--tiny-decoder", str(path)]) == 0, capsys.readouterr().err
    assert read_frames(out)[0].shape == (3, 64, 64, 3)
    assert main([*args, "--tiny-decoder", str(tmp_path / "absent.safetensors")]) == 2
    assert "weight file not found" in capsys.readouterr().err.splitlines()[-1]


def test_a_whole_autoencoder_tiny_state_dict_gives_its_decoder(tmp_path):
    torch.manual_seed(1)
    whole = AutoencoderTiny()
    folder = tmp_path / "whole"
    whole.save_pretrained(folder)
    loaded = load_tiny_decoder(folder)
    pairs = zip(loaded.decoder.state_dict().values(), whole.decoder.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_model_with_a_latent_space_of_its_own_refuses_it(original_file):
    from xnemo_core import bundled
    from xnemo_core.loading import load_models

    with pytest.raises(ValueError, match="has a latent space of its own"):
        XNeMoPipeline(load_models(bundled.MODEL, dtype="fp32"), decoder=load_tiny_decoder(original_file[1]))


def test_the_original_encoder_file_loads_as_its_own_architecture_encodes(original_file, tmp_path):
    torch.manual_seed(2)
    encoder = original_encoder()
    path = save_original(encoder, tmp_path / "taesd_encoder.safetensors")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        encoded = load_tiny_autoencoder(path, original_file[1]).encoder(images * 2 - 1)
        torch.testing.assert_close(encoded, encoder(images), rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="tiny encoder"):
        load_tiny_autoencoder(original_file[1], original_file[1])  # a decoder file in the encoder's place
