"""Execute a shared UI-format workflow without ComfyUI: our nodes through their classic classes,
ComfyUI's core image and video nodes through small stand-ins with the same inputs and outputs."""

import functools
import json
from pathlib import Path

import numpy as np
import torch
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

import nodes
from xnemo_core import bundled
from xnemo_core.loading import load_models
from xnemo_core.video import read_frames, read_image, write_video

CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# A shorter clip for test runs (also used by the live ComfyUI test); everything else as shipped.
SMALL_RUN = {"ImageFromBatch": {"length": 3}}
FRONTEND_ONLY = {"Note"}
WIDGET_KINDS = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
"""Nodes the frontend keeps out of the prompt."""


class ComfyLikeVAE:
    """ComfyUI's ``VAE`` contract: ``(B, H, W, C)`` pixels in [0, 1] ↔ raw latents."""

    def __init__(self, vae, latent_channels=4):
        self.vae, self.latent_channels = vae, latent_channels

    def encode(self, images):
        return self.vae.encode(images.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mode()

    def decode(self, latents):
        pixels = self.vae.decode(latents, num_frames=len(latents)).sample
        return (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)


class ComfyLikeCLIPVision:
    """ComfyUI's ``CLIP_VISION`` contract: ``encode_image((B, H, W, C) in [0, 1])["image_embeds"]``."""

    image_size = 224

    def __init__(self, encoder):
        self.encoder = encoder

    def encode_image(self, images, crop=True):
        pixels = images.permute(0, 3, 1, 2)
        mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
        return {"image_embeds": self.encoder((pixels - mean) / std).image_embeds}


@functools.cache
def _bundled_base_parts():
    models = load_models(bundled.MODEL, dtype="fp32")
    return ComfyLikeCLIPVision(models.image_encoder), ComfyLikeVAE(models.vae)


class CoreNodes:
    """ComfyUI core nodes the workflows use, reading ``inputs`` and writing ``outputs``."""

    def __init__(self, inputs: Path, outputs: Path):
        self.inputs, self.outputs = inputs, outputs

    def LoadImage(self, image, upload=None):
        pixels = torch.from_numpy(read_image(self.inputs / image).astype(np.float32) / 255.0)[None]
        return pixels, torch.zeros(pixels.shape[:3])

    def LoadVideo(self, file, upload=None):
        return (self.inputs / file,)

    def GetVideoComponents(self, video):
        frames, fps = read_frames(video)
        return torch.from_numpy(frames.astype(np.float32) / 255.0), None, fps

    def ImageFromBatch(self, image, batch_index, length):
        return (image[batch_index : batch_index + length],)

    def ImageFlip(self, image, flip_method):
        return (image.flip(2 if flip_method.startswith("y-axis") else 1),)

    def ImageSharpen(self, image, sharpen_radius, sigma, alpha):
        blurred = torch.nn.functional.avg_pool2d(
            image.permute(0, 3, 1, 2), 2 * sharpen_radius + 1, stride=1, padding=sharpen_radius, count_include_pad=False
        ).permute(0, 2, 3, 1)
        return ((image + alpha * (image - blurred)).clamp(0, 1),)

    def ImageOnlyCheckpointLoader(self, ckpt_name):
        """SVD's loader; its VAE and CLIP vision stand in through the bundled model's own, in ComfyUI's contract."""
        clip_vision, vae = _bundled_base_parts()
        return None, clip_vision, vae

    def CLIPVisionLoader(self, clip_name):
        return (_bundled_base_parts()[0],)

    def CreateVideo(self, images, fps, audio=None):
        return ({"images": images, "fps": fps},)

    def SaveVideo(self, video, filename_prefix, format, codec):
        frames = (video["images"].numpy() * 255).round().astype(np.uint8)
        write_video(self.outputs / f"{filename_prefix}.mp4", frames, video["fps"])
        return ()


def widget_inputs(node: dict) -> dict:
    """The node's widget values by input name (skipping a seed's control-after-generate value)."""
    randomized = set()
    if node["type"] in nodes.NODE_CLASS_MAPPINGS:
        randomized = {socket.name for socket in _declared(node["type"]).inputs if socket.randomize}
    values = iter(node.get("widgets_values") or [])
    found = {}
    for entry in node.get("inputs", []):
        if "widget" in entry:
            found[entry["name"]] = next(values)
            if entry["name"] in randomized:
                assert next(values) in CONTROL_VALUES
    return found


OPTIONS_SOCKETS = {"XNeMoContextOptions": "context_options", "XNeMoSpeedOptions": "speed_options"}
"""Options nodes and the Animate Portrait input each plugs into (as web/animate_portrait_upgrade.js)."""


def upgrade_legacy_inputs(node_type: str, inputs: dict) -> dict:
    """What the frontend's upgrade of an earlier Animate Portrait gives (web/animate_portrait_upgrade.js):
    saved values of widgets the node no longer has go to the options node that has them, which is
    made (and its output connected) only where some value differs from its defaults. A widget the
    file does not list keeps its default, as in the frontend."""
    if node_type not in nodes.NODE_CLASS_MAPPINGS:
        return inputs
    sockets = _declared(node_type).inputs
    declared = {socket.name for socket in sockets}
    widgets = {s.name: s.default for s in sockets if s.kind in WIDGET_KINDS}
    kept = widgets | {name: value for name, value in inputs.items() if name in declared}
    moved = {name: value for name, value in inputs.items() if name not in declared}
    for options_type, socket in OPTIONS_SOCKETS.items():
        options = _declared(options_type)
        defaults = {s.name: s.default for s in options.inputs}
        changed = {name: moved[name] for name in defaults if name in moved and moved[name] != defaults[name]}
        if changed and socket not in kept:
            kept[socket] = options.run(**defaults | changed)[0]
    return kept


def _declared(node_type: str):
    return next(node for node in nodes.NODES if node.node_id == node_type)


def execute(path: Path, core: CoreNodes, overrides: dict) -> dict[int, tuple]:
    """Run every node once all its linked inputs are computed; outputs by node id."""
    workflow = json.loads(path.read_text())
    sources = {link[0]: (link[1], link[2]) for link in workflow["links"]}
    outputs = {}
    for node in _dependency_order(workflow["nodes"], sources):
        if node["type"] in FRONTEND_ONLY:
            continue
        inputs = upgrade_legacy_inputs(node["type"], widget_inputs(node))
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                source, slot = sources[entry["link"]]
                inputs[entry["name"]] = outputs[source][slot]
        inputs.update(overrides.get(node["type"], {}))
        if node["type"] in nodes.NODE_CLASS_MAPPINGS:
            node_class = nodes.NODE_CLASS_MAPPINGS[node["type"]]
            outputs[node["id"]] = getattr(node_class(), node_class.FUNCTION)(**inputs)
        else:
            outputs[node["id"]] = getattr(core, node["type"])(**inputs)
    return outputs


def _dependency_order(graph_nodes: list[dict], sources: dict) -> list[dict]:
    ordered, done, waiting = [], set(), list(graph_nodes)
    while waiting:
        ready = [
            node
            for node in waiting
            if all(sources[i["link"]][0] in done for i in node.get("inputs", []) if i.get("link") is not None)
        ]
        assert ready, f"a cycle among nodes {[node['id'] for node in waiting]}"
        ordered += ready
        done |= {node["id"] for node in ready}
        waiting = [node for node in waiting if node["id"] not in done]
    return ordered
