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
"""Layers before the first weighted one in the original decoder file (its clamp); the encoder
file's layers are numbered as diffusers numbers them."""


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
        sources = [(str(path), _from_original(read_state_dict(path), path, ORIGINAL_CLAMP_LAYERS))]
    load_into(module.decoder, sources, what="tiny decoder")
    return module.eval().requires_grad_(False)


def load_tiny_autoencoder(encoder_path: str | Path, decoder_path: str | Path) -> AutoencoderTiny:
    """TAESD's encoder and decoder from their original files (what ``download`` fetches), each strictly."""
    module = load_tiny_decoder(decoder_path)
    tensors = _from_original(read_state_dict(encoder_path), Path(encoder_path), 0)
    load_into(module.encoder, [(str(encoder_path), tensors)], what="tiny encoder")
    return module


def _prefixed(tensors: dict, prefix: str) -> dict:
    """The decoder's own tensors of a whole ``AutoencoderTiny`` state dict (the encoder's left out)."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def _from_original(tensors: dict, path: Path, skipped_layers: int) -> dict:
    """An original file's ``nn.Sequential`` keys as diffusers' ``layers.N`` (``skipped_layers``
    parameterless layers lead the original)."""
    mapped = {}
    for key, value in tensors.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or int(index) < skipped_layers:
            raise CheckpointError(
                f"{path}: key {key!r} is not TAESD's (expected layer-numbered keys such as '{skipped_layers}.weight'); "
                "give taesd_decoder.safetensors or a diffusers AutoencoderTiny folder"
            )
        mapped[f"layers.{int(index) - skipped_layers}.{rest}"] = value
    return mapped
