"""Strict, safe loading: every bad file gives a clear error and loads nothing."""

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_state

from xnemo_core.checkpoints import CheckpointError, load_into, read_sources, read_state_dict
from xnemo_core.models.unet3d import DenoisingUNet
from xnemo_core.testing.check_fixtures import small_unets


@pytest.fixture(scope="module")
def small_denoiser_file(tmp_path_factory, tiny_models):
    """The tiny denoiser's weights by the fixture rule, in one file."""
    return write_state(
        tmp_path_factory.mktemp("denoiser") / "denoiser.safetensors", tiny_models.denoising_unet.state_dict()
    )


@pytest.fixture
def fresh_denoiser(tiny_models):
    config = tiny_models.config
    return DenoisingUNet(config.unet, config.frame_modules)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_untouched(module, before):
    after = module.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_fixture_unets_load_from_their_official_key_files(fixtures_dir, golden_settings):
    reference, denoiser = small_unets(golden_settings)
    for module, name in [(reference, "reference_unet"), (denoiser, "denoising_unet")]:
        expected = read_state_dict(fixtures_dir / f"golden_small_{name}.safetensors")
        torch.nn.init.zeros_(next(module.parameters()))
        load_into(module, read_sources([fixtures_dir / f"golden_small_{name}.safetensors"]), what=name)
        state = module.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_missing_key_is_named_with_the_file(tmp_path, small_denoiser_file, fresh_denoiser, suffix):
    tensors = read_state_dict(small_denoiser_file)
    removed = "down_blocks.1.motion_modules.0.temporal_transformer.proj_in.weight"
    del tensors[removed]
    path = write_state(tmp_path / f"denoiser{suffix}", tensors)
    before = snapshot(fresh_denoiser)
    with pytest.raises(CheckpointError) as error:
        load_into(fresh_denoiser, read_sources([path]), what="denoising UNet")
    assert removed in str(error.value) and str(path) in str(error.value)
    assert_untouched(fresh_denoiser, before)


def test_extra_key_is_reported(tmp_path, small_denoiser_file, fresh_denoiser):
    tensors = read_state_dict(small_denoiser_file)
    tensors["down_blocks.0.bogus.weight"] = torch.zeros(3)
    path = write_state(tmp_path / "extra.safetensors", tensors)
    before = snapshot(fresh_denoiser)
    with pytest.raises(CheckpointError, match="down_blocks.0.bogus.weight"):
        load_into(fresh_denoiser, read_sources([path]), what="denoising UNet")
    assert_untouched(fresh_denoiser, before)


def test_wrong_shape_names_key_and_both_shapes(tmp_path, small_denoiser_file, fresh_denoiser):
    tensors = read_state_dict(small_denoiser_file)
    expected = tuple(tensors["conv_in.weight"].shape)
    tensors["conv_in.weight"] = torch.zeros(*expected[:2], 1, 1)
    path = write_state(tmp_path / "shape.safetensors", tensors)
    before = snapshot(fresh_denoiser)
    shapes = rf"conv_in.weight has shape \({expected[0]}, 4, 1, 1\).*\({expected[0]}, 4, 3, 3\)"
    with pytest.raises(CheckpointError, match=shapes):
        load_into(fresh_denoiser, read_sources([path]), what="denoising UNet")
    assert_untouched(fresh_denoiser, before)


def test_wrong_position_table_is_rejected(tmp_path, small_denoiser_file, fresh_denoiser):
    tensors = read_state_dict(small_denoiser_file)
    key = next(k for k in tensors if k.endswith("pos_encoder.pe"))
    tensors[key] = tensors[key] + 1
    path = write_state(tmp_path / "pe.safetensors", tensors)
    with pytest.raises(CheckpointError, match="fixed table"):
        load_into(fresh_denoiser, read_sources([path]), what="denoising UNet")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file_is_a_clear_error(tmp_path, small_denoiser_file, suffix):
    full = write_state(tmp_path / f"full{suffix}", read_state_dict(small_denoiser_file))
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(truncated)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv_in.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="such pickles are refused") as raised:
        read_state_dict(path)
    assert not marker.exists()
    assert "weights_only" not in str(raised.value), "torch's advice to unpickle anyway is never passed on"


@pytest.mark.parametrize(
    "content, said",
    [
        (b"<!DOCTYPE html><html><body>Quota exceeded</body></html>", "a web page (HTML)"),
        (b"  <html>\n<head>", "a web page (HTML)"),
        (b"just some text\n", "begins with b'just some text"),
        (b"", "an empty file"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_called_so(tmp_path, content, said):
    path = tmp_path / "xnemo_motion_encoder.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as raised:
        read_state_dict(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: is not a PyTorch checkpoint but ") and said in message
    assert "download the real file again" in message and "weights_only" not in message


def test_a_damaged_official_file_names_where_it_is_published(official_layout, tmp_path):
    from xnemo_core.layouts import XNEMO_RELEASE
    from xnemo_core.loading import load_models

    model = Path(shutil.copytree(official_layout, tmp_path / "model"))
    (model / "xnemo_reference_unet.pth").write_bytes(b"<html>sign in to continue</html>")
    with pytest.raises(CheckpointError) as raised:
        load_models(model)
    assert "xnemo_reference_unet.pth: is not a PyTorch checkpoint but a web page" in str(raised.value)
    assert f"the reference UNet is published at {XNEMO_RELEASE}" in str(raised.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.pth")
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown weight format"):
        read_state_dict(odd)


def test_meta_built_module_with_uncomputable_buffers_is_refused():
    from xnemo_core.models.motion_encoder import MotionEncoder
    from xnemo_core.testing.synthetic_weights import synthesized_state_dict

    with torch.device("meta"):
        encoder = MotionEncoder()
    with pytest.raises(ValueError, match="build this module on a real device"):
        load_into(encoder, [("synthetic", synthesized_state_dict(encoder))], what="motion encoder")


def test_a_legacy_format_pickle_of_tensors_loads(tmp_path, small_denoiser_file):
    tensors = read_state_dict(small_denoiser_file)
    path = tmp_path / "legacy.pth"
    torch.save(tensors, path, _use_new_zipfile_serialization=False)
    loaded = read_state_dict(path)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_a_legacy_format_pickle_that_runs_code_is_still_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_legacy.pth"
    payload = {"conv_in.weight": torch.zeros(1), "payload": _RunsCode(marker)}
    torch.save(payload, path, pickle_module=pickle, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="such pickles are refused"):
        read_state_dict(path)
    assert not marker.exists()
