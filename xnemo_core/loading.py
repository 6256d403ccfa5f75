"""Every X-NeMo module of a model folder or bundle (:mod:`~xnemo_core.layouts`), loaded strictly."""

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from torch import nn

from . import recipes
from .builders import BASE_PARTS, build_motion_encoder, build_unet
from .checkpoints import CheckpointError, load_into, read_sources
from .config import XNeMoConfig
from .devices import parse_dtype
from .layouts import XNEMO_PARTS, FolderLayout, check_parts, diffusers_weights, open_layout
from .models import XNeMoModels
from .models.motion_encoder import MotionEncoder
from .models.spatial_guider import SpatialMotionGuider
from .motion import MotionEncoderId
from .previews import LatentRGB


def load_models(
    path: str | Path,
    dtype: str | torch.dtype = "fp16",
    device: str | torch.device = "cpu",
    allow_missing: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
) -> XNeMoModels:
    """Load every module found at ``path`` strictly (see :mod:`xnemo_core.checkpoints`).

    ``skip`` names base parts (``"image_encoder"``, ``"vae"``) not to load, because the caller
    supplies its own.

    ``allow_missing`` names groups of denoiser weights that may be absent from the files, e.g.
    ``("temporal_modules",)``: they keep their initialisation (identity modules) and a warning
    lists them.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model path not found: {path}")
    check_parts(path, XNEMO_PARTS)
    layout = open_layout(path)
    config = layout.config()
    motion_encoder = _load_motion_encoder(layout, config)
    found = {part: layout.optional_part(part) for part in BASE_PARTS if part not in skip}
    found = {part: config_and_sources for part, config_and_sources in found.items() if config_and_sources}
    models = XNeMoModels(
        config=config,
        motion_encoder=motion_encoder,
        reference_unet=_load_unet(layout, "reference_unet", config, allow_missing=()),
        denoising_unet=_load_unet(layout, "denoising_unet", config, allow_missing),
        **{part: _load_base_part(part, config, sources) for part, (config, sources) in found.items()},
        part_configs={part: config for part, (config, _) in found.items()},
        stored_motion_id=MotionEncoderId.of(motion_encoder),
        recipe=recipes.parse(layout.recipe(), layout.recipe_source()),
        latent_rgb=LatentRGB.from_json(*found_rgb) if "vae" in found and (found_rgb := layout.latent_rgb()) else None,
    )
    for module in models.modules().values():
        module.eval().requires_grad_(False)
    return models.to(device=device, dtype=parse_dtype(dtype))


def part_config(path: str | Path, part: str) -> dict | None:
    """The config of a base part (``"vae"``, ``"image_encoder"``) of the model at ``path``, read
    without its weights; ``None`` when the model has no such part."""
    return open_layout(Path(path)).part_config(part)


def _load_motion_encoder(layout, config: XNeMoConfig) -> MotionEncoder | SpatialMotionGuider:
    module = build_motion_encoder(config)
    load_into(module, layout.sources("motion_encoder"), what="motion encoder")
    return module


def _load_unet(layout, part: str, config: XNeMoConfig, allow_missing) -> nn.Module:
    # The meta device skips random initialisation; tolerated gaps need a real one.
    with torch.device("cpu" if allow_missing else "meta"):
        module = build_unet(part, config)
    what = part.replace("_", " ").replace("unet", "UNet")
    base = layout.base_unet() if part == "denoising_unet" else []
    load_into(module, layout.sources(part), what=what, allow_missing=allow_missing, base=base)
    return module


def load_base_part(path: str | Path, part: str) -> nn.Module | None:
    """A base part (``"vae"``, ``"image_encoder"``) of the model at ``path`` loaded strictly in
    float32; ``None`` when the model has no such part."""
    found = open_layout(Path(path)).optional_part(part)
    return _load_base_part(part, *found) if found else None


def load_vae(folder: str | Path) -> tuple[AutoencoderKLTemporalDecoder, dict]:
    """The VAE of a diffusers VAE folder (``config.json`` + weights) or of a model folder, loaded
    strictly in float32; returns it and its config."""
    folder = Path(folder)
    weights = diffusers_weights(folder)
    if (folder / "config.json").is_file() and weights is not None:
        config, sources = json.loads((folder / "config.json").read_text()), read_sources([weights])
    elif folder.is_dir() and (found := FolderLayout(folder).optional_part("vae")):
        config, sources = found
    else:
        raise CheckpointError(
            f"{folder}: expected a diffusers VAE folder (config.json and a weight file) or a model folder with a VAE"
        )
    return _load_base_part("vae", config, sources).float(), config


def _load_base_part(part: str, config: dict, sources) -> nn.Module:
    """A base-model part (CLIP, VAE) built from ``config`` and loaded strictly from ``sources``."""
    build, what = BASE_PARTS[part]
    module = build(config)
    load_into(module, sources, what=what)
    return module
