"""Assembling all modules from the official layout, precisions, conversion round trips."""

import pytest
import torch

from xnemo_core.__main__ import main as cli
from xnemo_core.checkpoints import CheckpointError
from xnemo_core.convert import write_bundle, write_parts
from xnemo_core.loading import load_models


def link_xnemo_files(source, folder):
    """The X-NeMo files and the small UNet config of ``source``, without its CLIP and VAE folders."""
    for item in source.glob("xnemo_*"):
        (folder / item.name).symlink_to(item)
    (folder / "sd-image-variations-diffusers").mkdir()
    (folder / "sd-image-variations-diffusers" / "unet").symlink_to(source / "sd-image-variations-diffusers" / "unet")


def states_equal(a, b):
    for name, module in a.modules().items():
        other = b.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, other[key]), f"{name}.{key}"


def test_official_layout_loads_every_part(official_layout, tiny_models):
    models = load_models(official_layout, dtype="fp32")
    assert set(models.modules()) == {"motion_encoder", "reference_unet", "denoising_unet", "image_encoder", "vae"}
    expected = tiny_models.denoising_unet.state_dict()
    loaded = models.denoising_unet.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert not any(p.requires_grad for p in models.denoising_unet.parameters())


@pytest.mark.parametrize(
    "dtype,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_precision_on_load(official_layout, dtype, torch_dtype):
    models = load_models(official_layout, dtype=dtype)
    for module in models.modules().values():
        assert {p.dtype for p in module.parameters()} == {torch_dtype}


def test_missing_temporal_file_is_an_error_unless_allowed(official_layout, tmp_path):
    copy = tmp_path / "no_temporal"
    copy.mkdir()
    for item in official_layout.iterdir():
        if item.name != "xnemo_temporal_module.pth":
            (copy / item.name).symlink_to(item)
    with pytest.raises(CheckpointError, match="temporal_modules"):
        load_models(copy, dtype="fp32")
    with pytest.warns(UserWarning, match="keep their initial values"):
        models = load_models(copy, dtype="fp32", allow_missing=("temporal_modules",))
    proj_out = models.denoising_unet.down_blocks[0].temporal_modules[0].temporal_transformer.proj_out
    assert torch.count_nonzero(proj_out.weight) == 0  # untrained temporal modules are identities


def test_convert_parts_and_bundle_round_trip(official_layout, tmp_path):
    original = load_models(official_layout, dtype="fp16")
    parts = write_parts(original, tmp_path / "parts")
    assert {p.name for p in parts} >= {"xnemo_denoising_unet.safetensors", "xnemo_vae.safetensors"}
    states_equal(original, load_models(tmp_path / "parts", dtype="fp16"))
    bundle = write_bundle(original, tmp_path / "xnemo.safetensors")
    states_equal(original, load_models(bundle, dtype="fp16"))


def test_convert_cli(official_layout, tmp_path, capsys):
    assert cli(["convert", str(official_layout), str(tmp_path / "b.safetensors"), "--bundle"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli(["convert", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "model path not found" in capsys.readouterr().err


def test_single_file_vae_without_config_uses_the_svd_config(official_layout, tmp_path):
    from diffusers import AutoencoderKLTemporalDecoder

    from xnemo_core.checkpoints import save_safetensors
    from xnemo_core.config import SVD_VAE
    from xnemo_core.testing.synthetic_weights import with_synthesized_weights

    folder = tmp_path / "single_file_vae"
    folder.mkdir()
    link_xnemo_files(official_layout, folder)
    vae = with_synthesized_weights(AutoencoderKLTemporalDecoder(**SVD_VAE), "VAE")
    save_safetensors(folder / "xnemo_vae.safetensors", {k: v.half() for k, v in vae.state_dict().items()}, {})
    models = load_models(folder, dtype="fp16")
    assert list(models.vae.config.block_out_channels) == [128, 256, 512, 512]
    assert torch.equal(
        models.vae.state_dict()["decoder.conv_out.weight"], vae.state_dict()["decoder.conv_out.weight"].half()
    )
    assert models.image_encoder is None


def test_single_file_vae_of_another_size_names_the_mismatch(official_layout, tmp_path):
    folder = tmp_path / "wrong_vae"
    folder.mkdir()
    link_xnemo_files(official_layout, folder)
    tiny_vae = official_layout / "stable-video-diffusion-img2vid-xt" / "vae" / "diffusion_pytorch_model.safetensors"
    (folder / "xnemo_vae.safetensors").symlink_to(tiny_vae)
    with pytest.raises(CheckpointError, match=r"cannot load the VAE.*\n.*has shape") as error:
        load_models(folder, dtype="fp16")
    assert "more tensors of other shapes" in str(error.value)
    assert len(str(error.value).splitlines()) <= 12  # a readable report, not every key


def test_part_configs_are_those_of_the_parts_loaded(tiny_model_folder):
    models = load_models(tiny_model_folder, dtype="fp32", skip=("vae",))
    assert models.vae is None and set(models.part_configs) == {"image_encoder"}
    assert models.part_configs["image_encoder"] == load_models(tiny_model_folder).part_configs["image_encoder"]
