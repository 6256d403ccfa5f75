"""The ComfyUI nodes without ComfyUI: declarations, and each node run on the tiny model."""

import dataclasses
import inspect
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nodes
from nodes import comfy_bridge
from nodes.animate import fit_to_gpu
from xnemo_core.config import XNeMoConfig
from xnemo_core.motion import MotionLatent, check_compatible, save_motion
from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
from xnemo_core.recipes import OFFICIAL, crop_mode


def run(node_id: str, **inputs):
    """Execute a node as ComfyUI does: an instance of its class, inputs by name."""
    node = nodes.NODE_CLASS_MAPPINGS[node_id]
    return getattr(node(), node.FUNCTION)(**inputs)


BASIC_TYPES = {
    "IMAGE",
    "MASK",
    "INT",
    "FLOAT",
    "STRING",
    "BOOLEAN",
    "VAE",
    "CLIP_VISION",
    "XNEMO_MODEL",
    "XNEMO_MOTION",
    "XNEMO_CONTEXT_OPTIONS",
    "XNEMO_SPEED_OPTIONS",
}


@pytest.fixture(scope="module")
def model(tiny_model_folder, monkeypatch_module):
    monkeypatch_module.setenv("XNEMO_MODELS", str(tiny_model_folder.parent))
    (loaded,) = run("LoadXNeMo", model=tiny_model_folder.name, precision="auto")
    return loaded


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def driving():
    return torch.rand(5, 48, 40, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def extracted(model, driving):
    return run("ExtractMotionLatent", model=model, frames=driving, crop="none", fps=12.0)


@pytest.fixture(scope="module")
def motion(extracted):
    latent, crops, _ = extracted
    return latent, crops


def test_extract_shows_the_frames_with_their_crop_boxes(extracted, driving):
    *_, boxes = extracted
    assert boxes.shape == driving.shape
    assert (boxes[:, 0, 0] * 255).round().tolist() == [[0, 220, 0]] * len(driving)  # crop none: the whole frame


def animate_inputs(model, reference, motion, seed=0, release_vram=False) -> dict:
    return dict(
        model=model,
        reference=reference,
        motion=motion,
        seed=seed,
        steps=2,
        cfg=2.5,
        denoise=1.0,
        size=64,
        crop="none",
        decode_chunk=25,
        release_vram=release_vram,
        context_options=context_options(context_frames=4, context_overlap=1),
    )


def context_options(**values) -> dict:
    """X-NeMo Context Options' output at its defaults but ``values``."""
    defaults = {socket.name: socket.default for socket in nodes.options.CONTEXT_OPTIONS.inputs}
    return run("XNeMoContextOptions", **defaults | values)[0]


def speed_options(**values) -> dict:
    """X-NeMo Speed Options' output at its defaults but ``values``."""
    defaults = {socket.name: socket.default for socket in nodes.options.SPEED_OPTIONS.inputs}
    return run("XNeMoSpeedOptions", **defaults | values)[0]


def blend_inputs(motion_a, mode, **extra) -> dict:
    defaults = {"weight": 1.5, "length_mode": "loop", "neutral_frame": 0, "from_frame": 0, "to_frame": -1}
    return dict(motion_a=motion_a, mode=mode, sigma_frames=1.0, **defaults, **extra)


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
    assert len(node.RETURN_NAMES) == len(node.RETURN_TYPES)


@pytest.mark.parametrize("declared", nodes.NODES, ids=lambda node: node.node_id)
def test_declared_inputs_are_the_parameters_of_the_node_function(declared):
    parameters = inspect.signature(declared.run).parameters
    assert [socket.name for socket in declared.inputs] == list(parameters)
    for socket in declared.inputs:
        has_default = parameters[socket.name].default is not inspect.Parameter.empty
        assert has_default == socket.optional, f"{declared.node_id}.{socket.name}"
        if socket.kind == "COMBO" and socket.default is not None:
            assert socket.default in socket.choices()


def test_loader_lists_models_and_names_a_missing_one(model, tiny_model_folder):
    assert tiny_model_folder.name in nodes.NODE_CLASS_MAPPINGS["LoadXNeMo"].INPUT_TYPES()["required"]["model"][0]
    with pytest.raises(FileNotFoundError, match="'nothere' not found in .*: fetch it with the Download X-NeMo Model"):
        run("LoadXNeMo", model="nothere", precision="fp32")


def test_extract_gives_one_latent_per_frame_and_the_crops(motion, driving, model):
    latent, crops = motion
    assert isinstance(latent, MotionLatent) and latent.tokens.shape == (5, 32, 16)
    assert latent.fps == 12.0 and latent.source_size == (48, 40) and latent.model_id == model.motion_id.current
    assert crops.shape == (5, 224, 224, 3) and crops.dtype == torch.float32


def test_extract_on_a_model_waiting_on_the_cpu_brings_only_the_motion_encoder_to_the_device(
    model, driving, monkeypatch
):
    placed = []
    encode = XNeMoPipeline.encode_motion

    def recorded(pipeline, faces):
        placed.append((pipeline.device, pipeline.offload))
        return encode(pipeline, faces)

    monkeypatch.setattr(XNeMoPipeline, "encode_motion", recorded)
    monkeypatch.setattr(model.managed, "load", lambda: pytest.fail("the whole model was loaded"))
    model.managed.release()
    run("ExtractMotionLatent", model=model, frames=driving, crop="none", fps=12.0)
    assert placed == [(comfy_bridge.torch_device(), True)]
    assert {p.device.type for p in model.managed.container.parameters()} == {"cpu"}


def test_a_small_part_runs_in_place_where_the_model_is_on_a_gpu_already(model, monkeypatch):
    on_gpu = torch.nn.Parameter(torch.empty(1, device="meta"))  # stands for a weight on another device
    monkeypatch.setattr(model.managed.container, "parameters", lambda: iter([on_gpu]))
    monkeypatch.setattr(model.managed, "load", lambda: torch.device("cuda"))
    assert model.managed.place_for_one_part() == (torch.device("cuda"), False)


def test_animate_gives_frames_and_pasted_back_frames(model, motion):
    latent, _ = motion
    reference = torch.rand(1, 80, 100, 3)
    frames, pasted, mask = run("AnimatePortrait", **animate_inputs(model, reference, latent, seed=7, release_vram=True))
    assert mask.shape == (1, 80, 100) and mask.max() == pytest.approx(1, abs=1e-3) and mask[0, 0, 0] == 0
    assert frames.shape == (5, 64, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    assert pasted.shape == (5, 80, 100, 3)
    assert not torch.equal(pasted[0], reference[0])


def test_animate_samples_with_the_chosen_speed_preset(model, motion, monkeypatch):
    latent, _ = motion
    used = []
    denoise = XNeMoPipeline.denoise

    def recording(self, condition, motion, settings, *args, **kwargs):
        used.append(settings)
        return denoise(self, condition, motion, settings, *args, **kwargs)

    monkeypatch.setattr(XNeMoPipeline, "denoise", recording)
    inputs = animate_inputs(model, torch.rand(1, 64, 64, 3), latent)
    exact = run("AnimatePortrait", **inputs)[0]
    fast = run("AnimatePortrait", **inputs | {"steps": 0}, speed_options=speed_options(preset="fast"))[0]
    run("AnimatePortrait", **inputs | {"steps": 3}, speed_options=speed_options(preset="fast"))  # a chosen value wins
    assert (used[0].sampler, used[0].steps, used[0].deep_cache_interval) == ("ddim", 2, 1)
    assert used[1] == used[0].with_preset("fast") and used[1].steps == 6
    assert used[2] == dataclasses.replace(used[1], steps=3)
    assert exact.shape == fast.shape and not torch.equal(exact, fast)


def test_a_fresh_animate_node_runs_at_the_models_recipe(monkeypatch):
    """The widgets' defaults (0 for steps, size and denoise) take the loaded model's recipe."""
    (bundled_model,) = run("LoadXNeMo", model="xnemo-synthetic-128", precision="fp32")
    used = []
    monkeypatch.setattr(XNeMoPipeline, "animate", lambda self, *args, **kwargs: used.append(args[3]) or 1 / 0)
    defaults = {s.name: s.default for s in nodes.animate.ANIMATE_PORTRAIT.inputs if s.default is not None}
    latent = MotionLatent(torch.zeros(2, 32, 16), bundled_model.motion_id.current, fps=25)
    with pytest.raises(ZeroDivisionError):
        run("AnimatePortrait", **defaults, model=bundled_model, reference=torch.rand(1, 64, 64, 3), motion=latent)
    recipe = bundled_model.recipe
    assert (used[0].steps, used[0].height, used[0].denoise) == (recipe["steps"], recipe["size"], recipe["denoise"])
    assert (used[0].steps, used[0].height, used[0].denoise) == (25, 128, 0.8)


def test_low_vram_gives_the_same_frames_and_leaves_the_modules_on_the_cpu(model, motion):
    latent, _ = motion
    reference = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    resident = run("AnimatePortrait", **animate_inputs(model, reference, latent))[0]
    low = run("AnimatePortrait", **animate_inputs(model, reference, latent), low_vram=True)[0]
    assert torch.equal(low, resident)
    assert {p.device.type for p in model.managed.container.parameters()} == {"cpu"}


def test_animate_refuses_motion_of_another_encoder(model, motion):
    latent, _ = motion
    foreign = MotionLatent(latent.tokens, model_id="me-other")
    with pytest.raises(ValueError, match="another motion encoder"):
        run("AnimatePortrait", **animate_inputs(model, torch.rand(1, 64, 64, 3), foreign))


def test_empty_frame_batch_is_a_clear_error(model):
    with pytest.raises(ValueError, match="non-empty IMAGE batch"):
        run("ExtractMotionLatent", model=model, frames=torch.zeros(0, 64, 64, 3), crop="none")


@pytest.mark.parametrize("mode", ["interpolate", "relative", "intensity", "smooth", "expression"])
def test_blend_modes_never_touch_the_model_and_keep_length(motion, mode):
    latent, _ = motion
    other = MotionLatent(torch.randn(3, 32, 16), latent.model_id)
    (out,) = run("MotionLatentBlend", **blend_inputs(latent, mode, motion_b=other))
    assert out.tokens.shape == latent.tokens.shape and not torch.equal(out.tokens, latent.tokens)


def test_blend_needs_the_second_motion_where_it_uses_one(motion):
    latent, _ = motion
    with pytest.raises(ValueError, match="needs a second motion"):
        run("MotionLatentBlend", **blend_inputs(latent, "interpolate"))


def test_motion_saves_and_loads_through_the_output_and_input_folders(motion, tmp_path, monkeypatch):
    latent, _ = motion
    monkeypatch.chdir(tmp_path)
    result = run("SaveMotionLatent", motion=latent, filename_prefix="shared/walk")
    saved = result["ui"]["text"][0]
    (tmp_path / "input").mkdir()
    (tmp_path / "output" / saved).rename(tmp_path / "input" / "walk.safetensors")
    assert "walk.safetensors" in nodes.NODE_CLASS_MAPPINGS["LoadMotionLatent"].INPUT_TYPES()["required"]["file"][0]
    (loaded,) = run("LoadMotionLatent", file="walk.safetensors")
    assert torch.equal(loaded.tokens, latent.tokens) and loaded.fps == latent.fps
    assert loaded.source_size == latent.source_size and loaded.model_id == latent.model_id


def test_bridge_falls_back_to_cpu_services_without_comfyui():
    assert comfy_bridge.model_management is None
    assert comfy_bridge.auto_precision(torch.device("cpu")) == "fp32"
    assert comfy_bridge.Progress(3)(1, 3) is None


@pytest.fixture
def comfy_folders(tmp_path, monkeypatch):
    """ComfyUI-like input and output folders, with a folder beside them that must stay untouched."""
    for kind in ("input", "output", "private"):
        (tmp_path / kind).mkdir()
    monkeypatch.setattr(comfy_bridge, "directory", lambda kind: tmp_path / kind)
    return tmp_path


@pytest.mark.parametrize("prefix", ["../private/escaped", "xnemo/../../private/escaped", "/tmp/xnemo_escaped"])
def test_save_refuses_a_prefix_leading_outside_the_output_folder(motion, comfy_folders, prefix):
    latent, _ = motion
    with pytest.raises(ValueError, match="leads outside the folder"):
        run("SaveMotionLatent", motion=latent, filename_prefix=prefix)
    assert list((comfy_folders / "private").iterdir()) == [] and not list(Path("/tmp").glob("xnemo_escaped*"))


def test_save_refuses_a_symlinked_subfolder_leading_out(motion, comfy_folders):
    latent, _ = motion
    (comfy_folders / "output" / "shared").symlink_to(comfy_folders / "private")
    with pytest.raises(ValueError, match="leads outside the folder"):
        run("SaveMotionLatent", motion=latent, filename_prefix="shared/walk")
    assert list((comfy_folders / "private").iterdir()) == []


def test_save_into_a_subfolder_numbers_the_files(motion, comfy_folders):
    latent, _ = motion
    names = [run("SaveMotionLatent", motion=latent, filename_prefix="xnemo/walk")["ui"]["text"][0] for _ in range(2)]
    assert names == ["xnemo/walk_00000.safetensors", "xnemo/walk_00001.safetensors"]


def test_load_refuses_names_leading_outside_the_input_folder(motion, comfy_folders):
    latent, _ = motion
    save_motion(latent, comfy_folders / "private" / "secret.safetensors")
    (comfy_folders / "input" / "linked").symlink_to(comfy_folders / "private")
    for name in ("../private/secret.safetensors", str(comfy_folders / "private" / "secret.safetensors")):
        with pytest.raises(ValueError, match="leads outside the folder"):
            run("LoadMotionLatent", file=name)
    with pytest.raises(ValueError, match="leads outside the folder"):
        run("LoadMotionLatent", file="linked/secret.safetensors")
    listed = nodes.NODE_CLASS_MAPPINGS["LoadMotionLatent"].INPUT_TYPES()["required"]["file"][0]
    assert not any("secret" in name for name in listed)


def test_a_saved_motion_is_listed_and_loads_from_the_output_folder(motion, comfy_folders):
    latent, _ = motion
    saved = run("SaveMotionLatent", motion=latent, filename_prefix="xnemo/walk")["ui"]["text"][0]
    listed = nodes.NODE_CLASS_MAPPINGS["LoadMotionLatent"].INPUT_TYPES()["required"]["file"][0]
    assert f"{saved} [output]" in listed
    (loaded,) = run("LoadMotionLatent", file=f"{saved} [output]")
    assert torch.equal(loaded.tokens, latent.tokens) and loaded.model_id == latent.model_id
    save_motion(latent, comfy_folders / "private" / "secret.safetensors")
    with pytest.raises(ValueError, match="leads outside the folder"):
        run("LoadMotionLatent", file="../private/secret.safetensors [output]")
    with pytest.raises(FileNotFoundError):
        run("LoadMotionLatent", file=saved)  # the same name without the mark is looked for in input/


def test_demo_media_never_replace_or_write_through_what_is_there(comfy_folders):
    victim = comfy_folders / "private" / "victim.png"
    victim.write_bytes(b"precious")
    portrait, driving, *others = (comfy_folders / "input" / name for name in comfy_bridge.DEMO_INPUTS.values())
    portrait.symlink_to(victim)
    driving.write_bytes(b"the user's own clip")
    assert comfy_bridge.install_demo_inputs() == others
    assert victim.read_bytes() == b"precious" and driving.read_bytes() == b"the user's own clip"


def test_motion_of_the_same_weights_loaded_in_another_precision_is_accepted(model, motion, tiny_model_folder):
    latent, _ = motion
    for precision in ("fp16", "bf16"):
        (other,) = run("LoadXNeMo", model=tiny_model_folder.name, precision=precision)
        assert other.motion_id == model.motion_id
        check_compatible(latent, other.motion_id)


def test_the_bundled_model_warns_on_images_of_another_world(model, motion, caplog):
    latent, _ = motion
    bundled_model = dataclasses.replace(model, is_bundled=True)
    with caplog.at_level(logging.WARNING):
        run("AnimatePortrait", **animate_inputs(bundled_model, torch.rand(1, 64, 64, 3), latent))
    assert "the bundled model knows only the synthetic cartoon faces" in caplog.text


@pytest.mark.parametrize("declared", nodes.NODES, ids=lambda node: node.node_id)
def test_every_input_and_output_says_what_it_is_for(declared):
    missing = [socket.name for socket in (*declared.inputs, *declared.outputs) if not socket.tooltip]
    assert not missing, f"{declared.node_id}: no tooltip on {missing}"


def test_animate_warns_that_a_non_square_face_crop_is_cut_to_its_centre(model, motion, caplog):
    latent, _ = motion
    reference = torch.rand(1, 80, 100, 3)
    with caplog.at_level(logging.WARNING):
        _, pasted, _ = run("AnimatePortrait", **animate_inputs(model, reference, latent))
    assert "100×80, not square: its centre 80×80 is animated" in caplog.text
    outside = reference[:, :, :10].expand(len(pasted), -1, -1, -1)
    torch.testing.assert_close(pasted[:, :, :10], outside, atol=1 / 255, rtol=0)  # 8-bit as the node reads it


def test_crop_auto_follows_the_models_recipe(model):
    (bundled_model,) = run("LoadXNeMo", model="xnemo-synthetic-128", precision="fp32")
    assert crop_mode("auto", bundled_model.recipe) == "none"
    assert crop_mode("auto", model.recipe) == "detect"  # any other model: the official recipe
    assert crop_mode("none", model.recipe) == "none"
    assert bundled_model.recipe == OFFICIAL | {"size": 128, "steps": 25, "denoise": 0.8, "crop": "none"}


GiB = 2**30


def official_sized(model_bytes: int):
    """An ``XNEMO_MODEL`` as far as fitting a run goes: the official model in fp16."""
    unet = SimpleNamespace(dtype=torch.float16)
    config = SimpleNamespace(max_window=24, unet=XNeMoConfig.official().unet)
    return SimpleNamespace(
        models=SimpleNamespace(denoising_unet=unet, config=config), managed=SimpleNamespace(size=model_bytes)
    )


@pytest.mark.parametrize(
    "total, low_vram, compile, expected",
    [
        (80 * GiB, False, "auto", (False, "auto")),  # room for the model, the run and a compiling run
        (12 * GiB, False, "auto", (False, "off")),  # the model stays; no room to compile beside the run
        (12 * GiB, False, "on", (False, "on")),  # asked for: compiled first
        (8 * GiB, False, "auto", (True, "off")),  # modules visit the GPU one at a time
        (80 * GiB, True, "auto", (True, "auto")),  # the user's switch wins
    ],
)
def test_the_run_is_fitted_to_the_gpu_s_memory(monkeypatch, total, low_vram, compile, expected):
    on_a_gpu_of(monkeypatch, total)
    official = AnimationSettings(height=512, width=512)
    assert fit_to_gpu(official_sized(int(5.7 * GiB)), official, 250, low_vram, compile) == expected


@pytest.mark.parametrize("frames, offload", [(48, False), (250, True)])
def test_the_deep_features_kept_for_reuse_count_in_the_fit(monkeypatch, frames, offload):
    """``balanced`` keeps every frame's deep features (2.4 GiB at 250 frames of 512²): on a 12 GiB
    card a 10-second clip no longer fits beside the resident model, a short one does."""
    on_a_gpu_of(monkeypatch, 12 * GiB)
    balanced = AnimationSettings(height=512, width=512).with_preset("balanced")
    assert fit_to_gpu(official_sized(int(5.7 * GiB)), balanced, frames, False, "off") == (offload, "off")


def on_a_gpu_of(monkeypatch, total: int) -> None:
    monkeypatch.setattr(comfy_bridge, "torch_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(comfy_bridge, "total_memory", lambda device: total)


def test_off_a_gpu_the_settings_stay(model):
    assert fit_to_gpu(model, AnimationSettings(), 8, False, "auto") == (False, "auto")


def test_releasing_the_model_forgets_its_compiled_denoiser(model):
    from xnemo_core.compiling import CompiledDenoiser

    denoiser = model.models.denoising_unet
    CompiledDenoiser.of(denoiser, cuda_graphs=False)
    model.managed.release()
    assert "_xnemo_compiled" not in denoiser.__dict__
