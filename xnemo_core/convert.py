"""Convert any accepted model layout into safetensors with the configs embedded.

One file per part (``xnemo_<part>.safetensors``) or one bundle file. Both load without pickles
and without the base-model folders.
"""

from pathlib import Path

import torch

from .checkpoints import save_safetensors
from .files import check_parent_is_folder, replacing
from .layouts import LATENT_RGB
from .models import PARTS, XNeMoModels


def _part_metadata(models: XNeMoModels, part: str) -> dict:
    metadata = {"xnemo_config": models.config.to_dict(), "part": part}
    if part in models.part_configs:
        metadata["config"] = models.part_configs[part]
    if part == "denoising_unet" and models.recipe:
        metadata["recipe"] = models.recipe
    if part == "vae" and models.latent_rgb:
        metadata[LATENT_RGB] = models.latent_rgb.as_dict()
    return metadata


def check_output(path: str | Path, bundle: bool, overwrite: bool = False) -> None:
    """Refuse an output the loader could not find again, or one that would replace files unasked;
    call it before any work."""
    path = Path(path)
    check_parent_is_folder(path)
    if bundle:
        if path.suffix != ".safetensors":
            raise FileExistsError(f"{path}: a bundle must be a file ending in .safetensors (the loader looks for that)")
        if path.is_dir():
            raise FileExistsError(f"{path}: is a folder; give the bundle a file name ending in .safetensors")
        existing = [path] if path.exists() else []
    else:
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path}: is a file; the parts are written into a folder (or pass --bundle)")
        existing = [_part_path(path, part) for part in PARTS if _part_path(path, part).exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise FileExistsError(f"{path}: would replace {names}; pass --force to replace, or choose another name")


def _part_path(folder: Path, part: str) -> Path:
    return folder / f"xnemo_{part}.safetensors"


def write_parts(models: XNeMoModels, folder: str | Path, overwrite: bool = False) -> list[Path]:
    """``folder/xnemo_<part>.safetensors`` for every loaded part; returns the paths written."""
    folder = Path(folder)
    check_output(folder, bundle=False, overwrite=overwrite)
    return [write_part(folder, part, module, _part_metadata(models, part)) for part, module in models.modules().items()]


def write_part(folder: str | Path, part: str, module: torch.nn.Module, metadata: dict) -> Path:
    """``folder/xnemo_<part>.safetensors`` holding ``module``'s weights and ``metadata`` (a base
    part's ``config`` among it, so that it loads without the base-model folders)."""
    path = _part_path(Path(folder), part)
    with replacing(path) as temporary:
        save_safetensors(temporary, module.state_dict(), metadata)
    return path


def write_bundle(models: XNeMoModels, path: str | Path, overwrite: bool = False) -> Path:
    """One safetensors file holding every part under a ``<part>.`` prefix."""
    path = Path(path)
    check_output(path, bundle=True, overwrite=overwrite)
    tensors: dict[str, torch.Tensor] = {}
    for part, module in models.modules().items():
        tensors.update({f"{part}.{key}": value for key, value in module.state_dict().items()})
    metadata = {"xnemo_config": models.config.to_dict(), "part_configs": models.part_configs}
    if models.recipe:
        metadata["recipe"] = models.recipe
    if models.vae is not None and models.latent_rgb:
        metadata[LATENT_RGB] = models.latent_rgb.as_dict()
    with replacing(path) as temporary:
        save_safetensors(temporary, tensors, metadata)
    return path
