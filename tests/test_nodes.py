"""The ComfyUI nodes without ComfyUI: declarations, and each node run on the tiny model."""

import pytest
import torch

import nodes
from nodes import comfy_bridge
from xnemo_core.motion import MotionLatent

BASIC_TYPES = {"IMAGE", "INT", "FLOAT", "STRING", "BOOLEAN", "XNEMO_MODEL", "XNEMO_MOTION"}


@pytest.fixture(scope="module")
def model(tiny_model_folder, monkeypatch_module):
    monkeypatch_module.setenv("XNEMO_MODELS", str(tiny_model_folder.parent))
    (loaded,) = nodes.LoadXNeMo().load(tiny_model_folder.name, "auto")
    return loaded


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def driving():
    return torch.rand(5, 48, 40, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def motion(model, driving):
    return nodes.ExtractMotionLatent().extract(model, driving, "none", 12.0)


@pytest.mark.parametrize("name", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_declarations_are_valid(name):
    node = nodes.NODE_CLASS_MAPPINGS[name]
    assert name in nodes.NODE_DISPLAY_NAME_MAPPINGS and callable(getattr(node, node.FUNCTION))
    inputs = node.INPUT_TYPES()
    for section, entries in inputs.items():
        assert section in ("required", "optional")
        for spec in entries.values():
            kind = spec[0]
            assert isinstance(kind, list) and kind or kind in BASIC_TYPES
            if kind in ("INT", "FLOAT") and len(spec) > 1:
                options = spec[1]
                assert options["min"] <= options["default"] <= options["max"]
    assert all(kind in BASIC_TYPES for kind in node.RETURN_TYPES)
    assert len(getattr(node, "RETURN_NAMES", node.RETURN_TYPES)) == len(node.RETURN_TYPES)


def test_loader_lists_models_and_names_a_missing_one(model, tiny_model_folder):
    assert tiny_model_folder.name in nodes.LoadXNeMo.INPUT_TYPES()["required"]["model"][0]
    with pytest.raises(FileNotFoundError, match="'nothere' not found in"):
        nodes.LoadXNeMo().load("nothere", "fp32")


def test_extract_gives_one_latent_per_frame_and_the_crops(motion, driving, model):
    latent, crops = motion
    assert isinstance(latent, MotionLatent) and latent.tokens.shape == (5, 32, 16)
    assert latent.fps == 12.0 and latent.source_size == (48, 40) and latent.model_id == model.motion_id
    assert crops.shape == (5, 224, 224, 3) and crops.dtype == torch.float32


def test_animate_gives_frames_and_pasted_back_frames(model, motion):
    latent, _ = motion
    reference = torch.rand(1, 80, 100, 3)
    frames, pasted = nodes.AnimatePortrait().animate(
        model, reference, latent, 7, 2, 2.5, "official", 4, 1, 64, "none", 25, True
    )
    assert frames.shape == (5, 64, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    assert pasted.shape == (5, 80, 100, 3)
    assert not torch.equal(pasted[0], reference[0])


def test_animate_refuses_motion_of_another_encoder(model, motion):
    latent, _ = motion
    foreign = MotionLatent(latent.tokens, model_id="me-other")
    with pytest.raises(ValueError, match="another motion encoder"):
        nodes.AnimatePortrait().animate(
            model, torch.rand(1, 64, 64, 3), foreign, 0, 1, 2.5, "official", 4, 1, 64, "none", 25, False
        )


def test_empty_frame_batch_is_a_clear_error(model):
    with pytest.raises(ValueError, match="non-empty IMAGE batch"):
        nodes.ExtractMotionLatent().extract(model, torch.zeros(0, 64, 64, 3), "none")


@pytest.mark.parametrize("mode", ["interpolate", "relative", "intensity", "smooth", "expression"])
def test_blend_modes_never_touch_the_model_and_keep_length(motion, mode):
    latent, _ = motion
    other = MotionLatent(torch.randn(3, 32, 16), latent.model_id)
    (out,) = nodes.MotionLatentBlend().blend(latent, mode, 1.5, "loop", 0, 0, -1, 1.0, other)
    assert out.tokens.shape == latent.tokens.shape and not torch.equal(out.tokens, latent.tokens)


def test_blend_needs_the_second_motion_where_it_uses_one(motion):
    latent, _ = motion
    with pytest.raises(ValueError, match="needs a second motion"):
        nodes.MotionLatentBlend().blend(latent, "interpolate", 0.5, "trim", 0, 0, -1, 1.0)


def test_motion_saves_and_loads_through_the_output_and_input_folders(motion, tmp_path, monkeypatch):
    latent, _ = motion
    monkeypatch.chdir(tmp_path)
    result = nodes.SaveMotionLatent().save(latent, "shared/walk")
    saved = result["ui"]["text"][0]
    (tmp_path / "input").mkdir()
    (tmp_path / "output" / saved).rename(tmp_path / "input" / "walk.safetensors")
    assert "walk.safetensors" in nodes.LoadMotionLatent.INPUT_TYPES()["required"]["file"][0]
    (loaded,) = nodes.LoadMotionLatent().load("walk.safetensors")
    assert torch.equal(loaded.tokens, latent.tokens) and loaded.fps == latent.fps
    assert loaded.source_size == latent.source_size and loaded.model_id == latent.model_id


def test_bridge_falls_back_to_cpu_services_without_comfyui():
    assert comfy_bridge.model_management is None
    assert comfy_bridge.auto_precision(torch.device("cpu")) == "fp32"
    assert comfy_bridge.Progress(3)(1, 3) is None
