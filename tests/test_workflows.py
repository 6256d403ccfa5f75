"""The shared workflow files: known node types only, links whose types match, our nodes' widgets."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from offline_comfy import SMALL_RUN, CoreNodes, execute

import nodes
from nodes import comfy_bridge
from xnemo_core.video import read_frames

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
# ComfyUI core nodes the workflows may use, with their output types (ComfyUI v0.8.0 /object_info).
CORE_OUTPUTS = {
    "LoadImage": ["IMAGE", "MASK"],
    "LoadVideo": ["VIDEO"],
    "GetVideoComponents": ["IMAGE", "AUDIO", "FLOAT"],
    "ImageFromBatch": ["IMAGE"],
    "ImageFlip": ["IMAGE"],
    "ImageSharpen": ["IMAGE"],
    "Note": [],
    "ImageOnlyCheckpointLoader": ["MODEL", "CLIP_VISION", "VAE"],
    "CLIPVisionLoader": ["CLIP_VISION"],
    "CreateVideo": ["VIDEO"],
    "SaveVideo": [],
}
UI_FIELDS = {"id", "type", "pos", "size", "flags", "order", "mode", "properties"}


def output_types(node_type: str) -> list[str]:
    if node_type in nodes.NODE_CLASS_MAPPINGS:
        return list(nodes.NODE_CLASS_MAPPINGS[node_type].RETURN_TYPES)
    return CORE_OUTPUTS[node_type]


def test_there_are_the_three_shared_workflows():
    assert {p.stem for p in WORKFLOWS} >= {
        "xnemo_basic_animation",
        "xnemo_blend_two_drivers",
        "xnemo_exaggerated_expression",
    }


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_uses_known_nodes_and_type_compatible_links(path):
    workflow = json.loads(path.read_text())
    by_id = {node["id"]: node for node in workflow["nodes"]}
    for node in workflow["nodes"]:
        assert UI_FIELDS <= set(node), f"{node['type']} lacks UI fields"
        assert node["type"] in nodes.NODE_CLASS_MAPPINGS or node["type"] in CORE_OUTPUTS
    for link_id, source, slot, target, target_slot, link_type in workflow["links"]:
        produced = output_types(by_id[source]["type"])[slot]
        accepted = by_id[target]["inputs"][target_slot]["type"]
        assert produced == link_type == accepted, f"link {link_id}: {produced} → {accepted}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_our_nodes_have_every_required_input(path):
    workflow = json.loads(path.read_text())
    linked = {(link[3], link[4]) for link in workflow["links"]}
    for node in workflow["nodes"]:
        if node["type"] not in nodes.NODE_CLASS_MAPPINGS:
            continue
        required = nodes.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()["required"]
        sockets = {i["name"]: index for index, i in enumerate(node.get("inputs", []))}
        for name, spec in required.items():
            if isinstance(spec[0], str) and spec[0] not in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                assert (node["id"], sockets[name]) in linked, f"{node['type']}.{name} is not connected"


@pytest.fixture(scope="module")
def offline_comfy(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline_comfy")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # outside ComfyUI, the nodes' input / output folders are the working directory's
        comfy_bridge.install_demo_inputs()  # what the pack does on import inside ComfyUI
        yield CoreNodes(root / "input", root / "output")


def user_files(path: Path) -> list[dict]:
    """The ``models`` entries of a workflow's loaders: files the user brings (the frontend offers their links)."""
    return [model for node in json.loads(path.read_text())["nodes"] for model in node["properties"].get("models", [])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_as_shipped_with_the_bundled_model_and_demo_media(path, offline_comfy):
    # one that needs the user's own files runs on the bundled model, its parts in ComfyUI's loaders' place
    bundled_model = {"LoadXNeMo": {"model": "xnemo-synthetic-128"}} if user_files(path) else {}
    execute(path, offline_comfy, SMALL_RUN | bundled_model)
    videos = sorted((offline_comfy.outputs / "xnemo").glob("animated*.mp4"))
    frames, _ = read_frames(videos[-1])
    trimmed = any(node["type"] == "ImageFromBatch" for node in json.loads(path.read_text())["nodes"])
    expected = SMALL_RUN["ImageFromBatch"]["length"] if trimmed else 48  # else the demo motion's frames
    assert frames.shape == (expected, 128, 128, 3) and frames.std() > 1
    if "expression" in path.stem:
        assert list((offline_comfy.outputs / "xnemo").glob("exaggerated_*.safetensors"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_reads_at_its_saved_view_grouped_with_a_note_and_no_node_hiding_another(path):
    workflow = json.loads(path.read_text())
    assert workflow["extra"]["ds"]["scale"] >= 0.6  # the frontend draws no text further out
    assert len(workflow["groups"]) >= 3 and all(group["title"] for group in workflow["groups"])
    (note,) = [node for node in workflow["nodes"] if node["type"] == "Note"]
    assert "official" in note["widgets_values"][0] and len(note["widgets_values"][0]) > 200
    boxes = [(n["type"], *n["pos"], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in workflow["nodes"]]
    for index, (name, left, top, right, bottom) in enumerate(boxes):
        for other, o_left, o_top, o_right, o_bottom in boxes[index + 1 :]:
            apart = right <= o_left or o_right <= left or bottom <= o_top or o_bottom <= top
            assert apart, f"{name} and {other} overlap"


def test_the_comfyui_loaders_workflow_links_its_files_and_feeds_them_to_load_x_nemo():
    path = WORKFLOWS[0].parent / "xnemo_with_comfyui_loaders.json"
    workflow = json.loads(path.read_text())
    by_type = {node["type"]: node for node in workflow["nodes"]}
    for loader, directory in (("ImageOnlyCheckpointLoader", "checkpoints"), ("CLIPVisionLoader", "clip_vision")):
        (entry,) = by_type[loader]["properties"]["models"]
        assert entry["name"] == by_type[loader]["widgets_values"][0] and entry["directory"] == directory
        assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith(".safetensors")
    linked = {(link[1], link[2], link[3], link[5]) for link in workflow["links"]}
    load = by_type["LoadXNeMo"]["id"]
    assert (by_type["ImageOnlyCheckpointLoader"]["id"], 2, load, "VAE") in linked
    assert (by_type["CLIPVisionLoader"]["id"], 0, load, "CLIP_VISION") in linked


def test_blend_two_drivers_blends_two_different_clips():
    workflow = json.loads((WORKFLOWS[0].parent / "xnemo_blend_two_drivers.json").read_text())
    clips = {node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "LoadVideo"}
    assert clips == {"xnemo_demo_driving.mp4", "xnemo_demo_driving_b.mp4"}


# Workflows an earlier version of the pack shipped (copied from this repository's history)

LEGACY = sorted((Path(__file__).resolve().parent / "legacy_workflows").glob("*.json"))


def legacy_animate_nodes(path: Path) -> list[dict]:
    return [node for node in json.loads(path.read_text())["nodes"] if node["type"] == "AnimatePortrait"]


class Captured(Exception):
    """Stops Animate Portrait once it has chosen its settings."""


@pytest.fixture(scope="module")
def settings_of(tiny_model_folder):
    """Animate Portrait's settings and compile mode for some widget inputs (the tiny model: the official recipe)."""
    from test_nodes import run

    from nodes import animate as node

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XNEMO_MODELS", str(tiny_model_folder.parent))
        (model,) = run("LoadXNeMo", model=tiny_model_folder.name, precision="fp32")

        def captured(model, settings, frames, low_vram, compile):
            raise Captured(settings, compile)

        patch.setattr(node, "fit_to_gpu", captured)
        patch.setattr(node, "check_compatible", lambda *args: None)
        driving = SimpleNamespace(tokens=torch.zeros(8, 32, 16))

        def settings(inputs: dict):
            with pytest.raises(Captured) as raised:
                run(
                    "AnimatePortrait",
                    model=model,
                    reference=torch.rand(1, 64, 64, 3),
                    motion=driving,
                    **inputs | {"crop": "none"},
                )
            return raised.value.args

        yield settings


def settings_before(saved: dict):
    """What Animate Portrait chose from these saved values before its options moved to options nodes:
    each value by its name, denoise 1 before it was a widget."""
    from xnemo_core import recipes
    from xnemo_core.portrait import animation_settings

    chosen = {name: saved.get(name, 1.0 if name == "denoise" else 0) or None for name in ("steps", "size", "denoise")}
    settings = animation_settings(
        recipes.OFFICIAL,
        saved.get("preset", "exact"),
        32,
        **chosen,
        seed=saved["seed"],
        cfg=saved["cfg"],
        schedule=saved["schedule"],
        context_frames=saved["context_frames"],
        context_overlap=saved["context_overlap"],
        decode_chunk=saved["decode_chunk"],
    )
    return settings, saved.get("compile", "auto")


@pytest.mark.parametrize("path", LEGACY, ids=lambda p: p.stem)
def test_an_earlier_shipped_workflow_gives_animate_portrait_the_same_settings(path, settings_of):
    from offline_comfy import upgrade_legacy_inputs, widget_inputs

    for node in legacy_animate_nodes(path):
        saved = widget_inputs(node)
        upgraded = upgrade_legacy_inputs("AnimatePortrait", saved)
        assert set(upgraded) <= {s.name for s in nodes.animate.ANIMATE_PORTRAIT.inputs}, "nothing unknown is passed"
        assert {name: upgraded[name] for name in saved if name in upgraded} == {
            name: value for name, value in saved.items() if name in upgraded
        }, "no value lands on another widget"
        assert settings_of(upgraded) == settings_before(saved)


def test_changed_values_of_moved_widgets_reach_animate_portrait_through_options_nodes(settings_of):
    from offline_comfy import upgrade_legacy_inputs, widget_inputs

    (node,) = legacy_animate_nodes(LEGACY[0])
    saved = widget_inputs(node) | {"schedule": "long", "context_overlap": 2, "preset": "fast", "compile": "off"}
    upgraded = upgrade_legacy_inputs("AnimatePortrait", saved)
    assert upgraded["context_options"]["schedule"] == "long" and upgraded["speed_options"]["preset"] == "fast"
    assert settings_of(upgraded) == settings_before(saved)
    unchanged = upgrade_legacy_inputs("AnimatePortrait", widget_inputs(node))
    assert "context_options" not in unchanged and "speed_options" not in unchanged, "defaults need no options node"
