"""A tiny decoder in place of the SVD VAE's, on request: TAESD (diffusers' ``AutoencoderTiny``), which
turns Stable Diffusion latents into frames one at a time at a fraction of the cost, for some quality
and without the temporal decoder's smoothing across frames.

It reads the decoder in either form it is published in: a diffusers ``AutoencoderTiny`` folder
(``config.json`` and weights, e.g. ``madebyollin/taesd``), or the original single file
(``taesd_decoder.safetensors`` / ``.pth``, as ComfyUI keeps it in ``models/vae_approx/``), whose
``nn.Sequential`` starts with a parameterless clamp that diffusers does in its forward instead: layer
``N`` of the file is diffusers' ``layers.N-1``. Loading is strict (:mod:`~xnemo_core.checkpoints`).
"""

import json
from pathlib import Path

from diffusers import AutoencoderTiny

from .checkpoints import CheckpointError, load_into, read_sources, read_state_dict
from .layouts import diffusers_weights

ORIGINAL_CLAMP_LAYERS = 1
"""Layers before the first weighted one in the original decoder file (its clamp)."""


def load_tiny_decoder(path: str | Path) -> AutoencoderTiny:
    """The tiny decoder at ``path`` (a diffusers folder or an original decoder file), float32, eval mode;
    only its decoder is loaded (the encoder stays unused)."""
    path = Path(path)
    if path.is_dir():
        weights = diffusers_weights(path)
        if not (path / "config.json").is_file() or weights is None:
            raise CheckpointError(f"{path}: expected a diffusers AutoencoderTiny folder (config.json and weights)")
        module = AutoencoderTiny.from_config(json.loads((path / "config.json").read_text()))
        sources = [(name, _prefixed(tensors, "decoder.")) for name, tensors in read_sources([weights])]
    else:
        module = AutoencoderTiny()
        sources = [(str(path), _from_original(read_state_dict(path), path))]
    load_into(module.decoder, sources, what="tiny decoder")
    return module.eval().requires_grad_(False)


def _prefixed(tensors: dict, prefix: str) -> dict:
    """The decoder's own tensors of a whole ``AutoencoderTiny`` state dict (the encoder's left out)."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def _from_original(tensors: dict, path: Path) -> dict:
    mapped = {}
    for key, value in tensors.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or int(index) < ORIGINAL_CLAMP_LAYERS:
            raise CheckpointError(
                f"{path}: key {key!r} is not a TAESD decoder's (expected layer-numbered keys such as '1.weight'); "
                "give taesd_decoder.safetensors or a diffusers AutoencoderTiny folder"
            )
        mapped[f"layers.{int(index) - ORIGINAL_CLAMP_LAYERS}.{rest}"] = value
    return mapped
