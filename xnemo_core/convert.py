"""Convert any accepted model layout into safetensors with the configs embedded.

One file per part (``xnemo_<part>.safetensors``) or one bundle file. Both load without pickles
and without the base-model folders.
"""

from pathlib import Path

import torch

from .checkpoints import save_safetensors
from .loading import XNeMoModels


def _part_metadata(models: XNeMoModels, part: str) -> dict:
    metadata = {"xnemo_config": models.config.to_dict(), "part": part}
    if part in models.part_configs:
        metadata["config"] = models.part_configs[part]
    return metadata


def write_parts(models: XNeMoModels, folder: str | Path) -> list[Path]:
    """``folder/xnemo_<part>.safetensors`` for every loaded part; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for part, module in models.modules().items():
        path = folder / f"xnemo_{part}.safetensors"
        save_safetensors(path, module.state_dict(), _part_metadata(models, part))
        written.append(path)
    return written


def write_bundle(models: XNeMoModels, path: str | Path) -> Path:
    """One safetensors file holding every part under a ``<part>.`` prefix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for part, module in models.modules().items():
        tensors.update({f"{part}.{key}": value for key, value in module.state_dict().items()})
    metadata = {"xnemo_config": models.config.to_dict(), "part_configs": models.part_configs}
    save_safetensors(path, tensors, metadata)
    return path
