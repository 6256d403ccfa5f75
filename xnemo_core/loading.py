"""Every X-NeMo module of a model folder or bundle (:mod:`~xnemo_core.layouts`), loaded strictly."""

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from torch import nn

from .builders import BASE_PARTS, build_motion_encoder, build_unet, build_vae
from .checkpoints import CheckpointError, load_into, read_sources
from .config import XNeMoConfig
from .devices import parse_dtype
from .layouts import FolderLayout, diffusers_weights, open_layout
from .models import XNeMoModels
from .models.motion_encoder import MotionEncoder
from .models.spatial_guider import SpatialMotionGuider
from .motion import MotionEncoderId


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
    layout = open_layout(path)
    config = layout.config()
    motion_encoder = _load_motion_encoder(layout, config)
    base = {
        part: _load_optional(layout, part, build, what)
        for part, (build, what) in BASE_PARTS.items()
        if part not in skip
    }
    models = XNeMoModels(
        config=config,
        motion_encoder=motion_encoder,
        reference_unet=_load_unet(layout, "reference_unet", config, allow_missing=()),
        denoising_unet=_load_unet(layout, "denoising_unet", config, allow_missing),
        **base,
        part_configs={part: layout.part_config(part) for part, module in base.items() if module is not None},
        stored_motion_id=MotionEncoderId.of(motion_encoder),
    )
    for module in models.modules().values():
        module.eval().requires_grad_(False)
    return models.to(device=device, dtype=parse_dtype(dtype))


def part_config(path: str | Path, part: str) -> dict | None:
    """The config of a base part (``"vae"``, ``"image_encoder"``) of the model at ``path``, read
    without its weights; ``None`` when the model has no such part."""
    path = Path(path)
    return open_layout(path).part_config(part)


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
    vae = build_vae(config)
    load_into(vae, sources, what="VAE")
    return vae.float(), config


def _load_optional(layout, part: str, build, what: str) -> nn.Module | None:
    """A base-model part (CLIP, VAE): ``None`` when the layout has none."""
    found = layout.optional_part(part)
    if found is None:
        return None
    config, sources = found
    module = build(config)
    load_into(module, sources, what=what)
    return module
