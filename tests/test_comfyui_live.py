"""Opt-in: a real ComfyUI with this pack (set COMFYUI_PATH to a ComfyUI checkout; its Python must
have ComfyUI's requirements, ours and playwright; Chromium at /usr/bin/chromium or CHROMIUM).

Starts ComfyUI with the tiny model in an ``xnemo:`` extra model path and an empty input folder,
checks ``/object_info``, queues every workflow of ``workflows/`` as shipped (bundled model, demo
media) through the real frontend, and checks the error messages of bad inputs.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_hub import FakeHub
from offline_comfy import SMALL_RUN
from safetensors.torch import save_file
from test_download import TOKEN, serve_official_model
from test_workflows import user_files

from xnemo_core import bundled
from xnemo_core.builders import build_image_encoder
from xnemo_core.config import (
    CLIP_IMAGE_ENCODER,
    TINY_CLIP_IMAGE_ENCODER,
    TINY_MOTION_ENCODER,
    TINY_UNET,
    TINY_VAE,
    XNeMoConfig,
)
from xnemo_core.convert import write_parts
from xnemo_core.motion import MotionLatent, save_motion
from xnemo_core.testing.synthetic_weights import synthesized_models, with_synthesized_weights
from xnemo_core.video import write_video

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to run against a real ComfyUI")
PORT = 8199
URL = f"http://127.0.0.1:{PORT}"
PACK = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def comfy_root(tmp_path_factory) -> Path:
    """The server's models, input and output folders."""
    return tmp_path_factory.mktemp("comfy")


def write_clip_vit_l(path: Path) -> None:
    """A full-size CLIP ViT-L/14 vision model (weights by the rule) in the Hugging Face layout that
    ComfyUI's Load CLIP Vision reads, as models/clip_vision holds it."""
    encoder = with_synthesized_weights(build_image_encoder(CLIP_IMAGE_ENCODER), "CLIP ViT-L/14")
    save_file({key: value.half().contiguous() for key, value in encoder.state_dict().items()}, str(path))


def clip_768_model():
    """The tiny model with 768-wide CLIP embeddings, as the official one takes them from a ViT-L/14."""
    config = XNeMoConfig(unet={**TINY_UNET, "cross_attention_dim": 768}, motion_encoder=dict(TINY_MOTION_ENCODER))
    return synthesized_models(config, {**TINY_CLIP_IMAGE_ENCODER, "projection_dim": 768}, TINY_VAE)


def write_taesd(folder: Path) -> None:
    """TAESD's encoder and decoder files (weights random) as ComfyUI's models/vae_approx holds them: the
    original layer numbering, the decoder's shifted by its leading clamp (see xnemo_core/tiny_decoder.py)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    tensors = AutoencoderTiny().state_dict()
    folder.mkdir()
    for part, shift in (("encoder", 0), ("decoder", 1)):
        prefix = f"{part}.layers."
        original = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, rest = key[len(prefix) :].split(".", 1)
                original[f"{int(index) + shift}.{rest}"] = value.contiguous()
        save_file(original, str(folder / f"taesd_{part}.safetensors"))


@pytest.fixture(scope="module")
def live_hub(official_layout):
    """A local fake Hugging Face Hub and release folder, which the server reaches through HF_ENDPOINT."""
    with FakeHub() as fake:
        yield serve_official_model(fake, official_layout)


@pytest.fixture(scope="module")
def server(comfy_root, tiny_model_folder, live_hub):
    root = comfy_root
    custom_nodes = Path(COMFYUI) / "custom_nodes"
    if not any(entry.resolve() == PACK for entry in custom_nodes.iterdir()):
        (custom_nodes / "comfyui-xnemo").symlink_to(PACK)
    models = root / "models"
    shutil.copytree(tiny_model_folder, models / "xnemo-tiny")
    shutil.copytree(tiny_model_folder, models / "xnemo")  # the name the earliest workflows load
    shutil.copytree(tiny_model_folder, models / "xnemo-broken")
    (models / "xnemo-broken" / "xnemo_motion_encoder.safetensors").unlink()
    write_parts(clip_768_model(), models / "xnemo-clip768")
    (root / "clip_vision").mkdir()
    write_clip_vit_l(root / "clip_vision" / "clip_vit_large_patch14.safetensors")
    write_taesd(root / "vae_approx")
    paths = f"  base_path: {models}\n  xnemo: .\n  clip_vision: {root / 'clip_vision'}\n  vae_approx: {root / 'vae_approx'}\n"
    (root / "extra.yaml").write_text(f"xnemo_test:\n{paths}")
    inputs = root / "input"  # the pack copies its demo media here on import
    inputs.mkdir()
    write_video(inputs / "short.mp4", np.full((2, 64, 64, 3), 128, np.uint8))
    shutil.copyfile(bundled.DEMO_DRIVING, inputs / "driving.mp4")  # what the earliest workflows load
    shutil.copyfile(bundled.DEMO_PORTRAIT, inputs / "portrait.png")
    save_motion(MotionLatent(torch.randn(3, 32, 16), model_id="me-of-another-model"), inputs / "foreign.safetensors")
    command = [
        sys.executable,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(PORT),
        "--extra-model-paths-config",
        str(root / "extra.yaml"),
        "--input-directory",
        str(inputs),
        "--output-directory",
        str(root / "output"),
    ]
    hub = {"HF_ENDPOINT": live_hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(root / "hf-home")}
    process = subprocess.Popen(
        command, cwd=COMFYUI, env=os.environ | hub, stdout=open(root / "log.txt", "w"), stderr=subprocess.STDOUT
    )
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{URL}/object_info/LoadXNeMo")
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"ComfyUI did not start: {(root / 'log.txt').read_text()[-2000:]}")
        yield "xnemo-tiny"
    finally:
        process.terminate()
        process.wait(30)


def test_object_info_lists_the_nodes_and_the_motion_type(server):
    info = json.load(urllib.request.urlopen(f"{URL}/object_info"))
    for name in ("LoadXNeMo", "ExtractMotionLatent", "AnimatePortrait", "MotionLatentBlend"):
        assert name in info
    assert info["XNeMoContextOptions"]["output"] == ["XNEMO_CONTEXT_OPTIONS"]
    assert info["AnimatePortrait"]["input"]["optional"]["speed_options"][0] == "XNEMO_SPEED_OPTIONS"
    assert "XNEMO_MOTION" in info["ExtractMotionLatent"]["output"]
    assert info["AnimatePortrait"]["input"]["required"]["motion"][0] == "XNEMO_MOTION"
    kind, options = info["LoadXNeMo"]["input"]["required"]["model"]
    assert kind == "COMBO" and server in options["options"]  # the V3 (comfy_api) form of a dropdown
    assert "xnemo-synthetic-128" in options["options"]  # the bundled model, with no set-up


def test_every_workflow_runs(server):
    from comfyui_live import run

    results = run(URL, SMALL_RUN)
    assert results.pop("_alerts") == []
    assert len(results) >= 3
    for name, result in results.items():
        if user_files(PACK / "workflows" / name):
            # SVD is not here (the ViT-L/14 is): the server names exactly it
            node_errors = result["detail"]["error"]["node_errors"].values()
            failed = {error["class_type"] for error in node_errors}
            assert failed == {"ImageOnlyCheckpointLoader"}, f"{name}: {result}"  # a tiny model is named xnemo here
            assert all(e["type"] == "value_not_in_list" for error in node_errors for e in error["errors"])
            continue
        assert result["status"] == "success", f"{name}: {result}"


def test_the_download_node_fetches_a_model_that_load_x_nemo_lists_and_animates_with(server, live_hub, comfy_root):
    from comfyui_live import queue_prompt

    from nodes.download import EVERYTHING

    download = {
        "name": "downloaded",
        "parts": EVERYTHING,
        "convert_to_safetensors": True,
        "accept_licences": True,
        "xnemo_from": f"{live_hub.url}/release",
    }
    fetched = queue_prompt(URL, {"download": _node("DownloadXNeMoModel", **download)})
    assert fetched["status"] == "success", fetched
    assert "pick 'downloaded' in Load X-NeMo" in fetched["outputs"]["download"]["text"][0]
    assert (comfy_root / "models" / "downloaded" / "xnemo_vae.safetensors").is_file()
    assert any(path.endswith("vae/diffusion_pytorch_model.safetensors") for _, path, _ in live_hub.requests)
    info = json.load(urllib.request.urlopen(f"{URL}/object_info/LoadXNeMo"))
    assert "downloaded" in info["LoadXNeMo"]["input"]["required"]["model"][1]["options"]
    animated = queue_prompt(URL, _graph("downloaded", _driver("motion", "xnemo_demo_driving.mp4")))
    assert animated["status"] == "success", animated
    refused = queue_prompt(URL, {"download": _node("DownloadXNeMoModel", **download | {"accept_licences": False})})
    assert "set accept_licences to true" in refused["errors"][0]["exception_message"]


def _node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


CONTEXT = {"schedule": "official", "context_frames": 4, "context_overlap": 1, "window_batch": 1}
SPEED = {"preset": "exact", "sampler": "preset", "guidance_until": 0.0, "deep_cache_interval": 0, "compile": "auto"}


def _graph(model: str, motion: dict, speed: dict | None = None, **animate) -> dict:
    """LoadXNeMo + a motion source + AnimatePortrait (with its two options nodes) on the demo
    portrait, as an API prompt."""
    settings = {"seed": 0, "steps": 1, "cfg": 2.5, "denoise": 1.0, "size": 64, "crop": "none", "decode_chunk": 25}
    settings |= {"release_vram": False, "context_options": ["context", 0], "speed_options": ["speed", 0]}
    return {
        "model": _node("LoadXNeMo", model=model, precision="auto"),
        "portrait": _node("LoadImage", image="xnemo_demo_portrait.png"),
        **motion,
        "context": _node("XNeMoContextOptions", **CONTEXT),
        "speed": _node("XNeMoSpeedOptions", **SPEED | (speed or {})),
        "animate": _node(
            "AnimatePortrait", model=["model", 0], reference=["portrait", 0], motion=["motion", 0], **settings | animate
        ),
        "preview": _node("PreviewImage", images=["animate", 0]),
    }


def _driver(key: str, file: str) -> dict:
    return {
        f"{key}_video": _node("LoadVideo", file=file),
        f"{key}_frames": _node("GetVideoComponents", video=[f"{key}_video", 0]),
        key: _node("ExtractMotionLatent", model=["model", 0], frames=[f"{key}_frames", 0], crop="none"),
    }


def test_bad_inputs_give_one_clear_message(server):
    from comfyui_live import queue_prompt

    blend = {"weight": 0.5, "length_mode": "trim", "neutral_frame": 0, "from_frame": 0, "to_frame": -1}
    cases = {
        "missing model file": (
            _graph("xnemo-broken", _driver("motion", "xnemo_demo_driving.mp4")),
            "xnemo_motion_encoder",
        ),
        "motion of another model": (
            _graph(server, {"motion": _node("LoadMotionLatent", file="foreign.safetensors")}),
            "another motion encoder",
        ),
        "mismatched lengths": (
            _graph(
                server,
                {
                    **_driver("long", "xnemo_demo_driving.mp4"),
                    **_driver("short", "short.mp4"),
                    "motion": _node(
                        "MotionLatentBlend",
                        motion_a=["long", 0],
                        motion_b=["short", 0],
                        mode="interpolate",
                        sigma_frames=1.0,
                        **blend,
                    ),
                },
            ),
            "cannot trim 2 frames to 48",
        ),
        "size not a multiple of 64": (
            _graph(server, _driver("motion", "xnemo_demo_driving.mp4"), size=100),
            "multiple of 64",
        ),
    }
    for name, (prompt, expected) in cases.items():
        result = queue_prompt(URL, prompt)
        assert result["status"] == "error", f"{name}: {result}"
        (error,) = result["errors"]
        assert expected in error["exception_message"], f"{name}: {error['exception_message']}"
        raised_at = error["traceback"][-1]
        assert str(PACK) in raised_at or f"custom_nodes{os.sep}" in raised_at, f"{name}: raised in {raised_at}"


def test_a_saved_motion_is_listed_and_animates_with_the_speed_and_compositing_options(server):
    from comfyui_live import queue_prompt

    save = {
        "model": _node("LoadXNeMo", model=server, precision="auto"),
        **_driver("motion", "xnemo_demo_driving.mp4"),
        "save": _node("SaveMotionLatent", motion=["motion", 0], filename_prefix="xnemo/live_walk"),
    }
    saved = queue_prompt(URL, save)
    assert saved["status"] == "success", saved
    (name,) = saved["outputs"]["save"]["text"]
    info = json.load(urllib.request.urlopen(f"{URL}/object_info/LoadMotionLatent"))
    assert f"{name} [output]" in info["LoadMotionLatent"]["input"]["required"]["file"][1]["options"]
    options = {"colour_match": True, "low_vram": True, "steps": 2}
    motion = {"motion": _node("LoadMotionLatent", file=f"{name} [output]")}
    prompt = _graph(server, motion, speed={"preset": "fast"}, **options)
    prompt["mask"] = _node("MaskToImage", mask=["animate", 2])
    prompt["mask_preview"] = _node("PreviewImage", images=["mask", 0])
    animated = queue_prompt(URL, prompt)
    assert animated["status"] == "success", animated
    assert {"preview", "mask_preview"} <= set(animated["outputs"])


def test_save_motion_latent_shows_the_name_it_wrote(server):
    from comfyui_live import saved_name_on_the_node

    shown = saved_name_on_the_node(URL, "xnemo_exaggerated_expression", SMALL_RUN)
    assert shown and shown.startswith("xnemo/exaggerated_") and shown.endswith(".safetensors")


def test_load_motion_latent_uploads_a_motion_file_from_its_button(server, comfy_root, tmp_path):
    from comfyui_live import upload_on_the_node

    motion = tmp_path / "uploaded_walk.safetensors"
    save_motion(MotionLatent(torch.zeros(3, 32, 16), "me2-test", fps=25), motion)
    shown = upload_on_the_node(URL, motion)
    assert shown["button"] == "choose motion file to upload" and shown["chosen"] == motion.name
    assert shown["widgets_values"] == [motion.name]  # the button is not saved with the workflow
    assert (comfy_root / "input" / motion.name).read_bytes() == motion.read_bytes()
    info = json.load(urllib.request.urlopen(f"{URL}/object_info/LoadMotionLatent"))
    assert motion.name in info["LoadMotionLatent"]["input"]["required"]["file"][1]["options"]


def test_the_download_node_stops_at_cancel_and_resumes_when_queued_again(server, live_hub, comfy_root):
    from comfyui_live import outcome, post, queue_prompt

    from nodes.download import XNEMO_ONLY

    motion_encoder = "/release/xnemo_motion_encoder.pth"
    live_hub.slow[motion_encoder] = 0.1
    download = {"name": "resumed", "parts": XNEMO_ONLY, "convert_to_safetensors": True, "accept_licences": True}
    prompt = {"download": _node("DownloadXNeMoModel", **download, xnemo_from=f"{live_hub.url}/release")}
    staging = comfy_root / "models" / ".resumed.download"
    queued = post(f"{URL}/prompt", {"prompt": prompt})["prompt_id"]
    deadline = time.time() + 120
    while not list(staging.glob(".xnemo_motion_encoder.pth.partial")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    urllib.request.urlopen(urllib.request.Request(f"{URL}/interrupt", data=b"", method="POST"))
    stopped = outcome(URL, queued, timeout_s=300)
    assert stopped["status"] == "error" and "execution_interrupted" in stopped["events"], stopped
    assert not (staging / "xnemo_motion_encoder.pth").exists()
    live_hub.slow.clear()
    resumed = queue_prompt(URL, prompt)
    assert resumed["status"] == "success", resumed
    assert live_hub.gets(motion_encoder)[-1].startswith("bytes="), "the second run resumes the partial file"
    assert (comfy_root / "models" / "resumed" / "xnemo_motion_encoder.safetensors").is_file()


def test_comfyuis_own_clip_vision_loader_feeds_load_x_nemo(server):
    from comfyui_live import queue_prompt

    clip = {"clip": _node("CLIPVisionLoader", clip_name="clip_vit_large_patch14.safetensors")}
    prompt = _graph("xnemo-clip768", _driver("motion", "xnemo_demo_driving.mp4")) | clip
    prompt["model"]["inputs"]["clip_vision"] = ["clip", 0]
    animated = queue_prompt(URL, prompt)
    assert animated["status"] == "success", animated
    prompt = _graph(server, _driver("motion", "xnemo_demo_driving.mp4")) | clip
    prompt["model"]["inputs"]["clip_vision"] = ["clip", 0]
    refused = queue_prompt(URL, prompt)
    message = refused["errors"][0]["exception_message"]
    assert "expects 64-wide CLIP image embeddings, the CLIP vision model gives 768-wide ones" in message


LEGACY = sorted((PACK / "tests" / "legacy_workflows").glob("*.json"))
FAST = SMALL_RUN | {"AnimatePortrait": {"steps": 2, "size": 64, "crop": "none"}, "ExtractMotionLatent": {"crop": "none"}}
"""Short runs (and no face detection: the earliest workflows were made for real faces, the demo clip's
are synthetic); what a workflow computes is compared through its prompt, below."""


def test_earlier_shipped_workflows_open_with_each_value_on_its_widget_and_run(server):
    from comfyui_live import run
    from offline_comfy import upgrade_legacy_inputs, widget_inputs

    results = run(URL, FAST, LEGACY)
    assert results.pop("_alerts") == []
    for name, result in results.items():
        saved = [node for node in json.loads((PACK / "tests" / "legacy_workflows" / name).read_text())["nodes"]]
        (animate,) = [node for node in saved if node["type"] == "AnimatePortrait"]
        expected = upgrade_legacy_inputs("AnimatePortrait", widget_inputs(animate))
        (shown,) = [node for node in result["shown"] if node["type"] == "AnimatePortrait"]
        widgets = {key: value for key, value in shown["widgets"].items() if key != "control_after_generate"}
        assert widgets == {key: value for key, value in expected.items() if key in widgets}, name
        assert not set(shown["inputs"]) & {"schedule", "context_frames", "context_overlap", "compile", "preset"}
        assert [n["type"] for n in result["shown"] if n["type"].startswith("XNeMo")] == [], "defaults: no options node"
        if user_files(PACK / "workflows" / name.split("_", 1)[1]):
            continue  # the ComfyUI loaders' files (svd_xt) are the user's own
        assert result["status"] == "success", f"{name}: {result}"


def test_an_earlier_animate_portrait_with_changed_moved_values_gets_its_options_nodes(server, tmp_path):
    from comfyui_live import run

    path = next(p for p in reversed(LEGACY) if "basic_animation" in p.name and len(_widgets(p)) == 16)
    workflow = json.loads(path.read_text())
    animate = next(node for node in workflow["nodes"] if node["type"] == "AnimatePortrait")
    names = [entry["name"] for entry in animate["inputs"] if "widget" in entry]
    values = animate["widgets_values"]
    values[names.index("schedule") + 1] = "long"  # + 1: the seed's control value comes first
    values[names.index("preset") + 1] = "fast"
    changed = tmp_path / path.name
    changed.write_text(json.dumps(workflow))
    result = run(URL, FAST, [changed])[changed.name]
    shown = {node["type"]: node for node in result["shown"]}
    assert shown["XNeMoContextOptions"]["widgets"]["schedule"] == "long"
    assert shown["XNeMoSpeedOptions"]["widgets"]["preset"] == "fast"
    assert {"context_options", "speed_options"} <= set(shown["AnimatePortrait"]["connected"])
    assert result["status"] == "success", result


def _widgets(path: Path) -> list:
    return next(n for n in json.loads(path.read_text())["nodes"] if n["type"] == "AnimatePortrait")["widgets_values"]


def test_the_last_earlier_workflow_and_its_rebuilt_file_animate_the_same_frames(server):
    """The same computation: every node's class and values alike (ComfyUI then serves the second from its cache)."""
    from comfyui_live import run

    earlier = next(p for p in reversed(LEGACY) if "basic_animation" in p.name and len(_widgets(p)) == 16)
    results = run(URL, FAST, [earlier, PACK / "workflows" / "xnemo_basic_animation.json"])
    first, rebuilt = results[earlier.name], results["xnemo_basic_animation.json"]
    assert first["status"] == rebuilt["status"] == "success", results
    assert _computation(first["prompt"]) == _computation(rebuilt["prompt"])


def _computation(prompt: dict) -> list:
    """Each node's class and non-link inputs, in an order that does not depend on node ids."""
    values = [
        (node["class_type"], sorted((k, v) for k, v in node["inputs"].items() if not isinstance(v, list)))
        for node in prompt.values()
    ]
    return sorted(values, key=repr)


def test_previews_reach_the_client_during_a_run(server):
    from comfyui_live import previews_during

    prompt = _graph(server, _driver("motion", "xnemo_demo_driving.mp4"), steps=3)
    shown = previews_during(URL, prompt, {"preview_method": "latent2rgb"})
    assert "progress" in shown["types"] and len(shown["binary"]) >= 3, shown["types"]
    none = previews_during(URL, _graph(server, _driver("motion", "xnemo_demo_driving.mp4"), seed=1), {"preview_method": "none"})
    assert none["binary"] == []
    vhs = {"preview_method": "latent2rgb", "extra_pnginfo": {"workflow": {"extra": {"VHS_latentpreview": True}}}}
    animated = previews_during(URL, _graph(server, _driver("motion", "xnemo_demo_driving.mp4"), seed=2, steps=3), vhs)
    assert animated["vhs"] and animated["vhs"][0]["length"] == 48 and animated["vhs"][0]["rate"] == 8
    indexed = [data for event, data in animated["binary"] if data[:8] == b"\x00\x00\x00\x01" * 2]
    assert len(indexed) >= 48 and indexed[0][12:14] == b"\xff\xd8", "indexed JPEG frames, VHS's header"


def test_comfyuis_own_taesd_vae_feeds_load_x_nemo(server):
    """The tiny decoder in ComfyUI: its TAESD VAE (Load VAE's taesd) into Load X-NeMo's vae input."""
    from comfyui_live import queue_prompt

    prompt = _graph(server, _driver("motion", "xnemo_demo_driving.mp4")) | {"taesd": _node("VAELoader", vae_name="taesd")}
    prompt["model"]["inputs"]["vae"] = ["taesd", 0]
    animated = queue_prompt(URL, prompt)
    assert animated["status"] == "success", animated
    assert animated["outputs"]["preview"]["images"], "the frames, decoded by TAESD"
