"""Assemble all X-NeMo modules from a model folder or a converted bundle.

Accepted layouts (first match wins for each part):

* the official release::

      DIR/xnemo_{denoising_unet,reference_unet,motion_encoder,temporal_module}.pth
      DIR/sd-image-variations-diffusers/unet/{config.json, diffusion_pytorch_model.*}   (optional)
      DIR/sd-image-variations-diffusers/image_encoder/{config.json, model weights}
      DIR/stable-video-diffusion-img2vid-xt/vae/{config.json, diffusion_pytorch_model.*}

* the same names as ``.safetensors`` (official files converted one to one);
* our converted folder (``python -m xnemo_core convert``): ``xnemo_<part>.safetensors`` whose
  metadata carries the configs; ``xnemo_image_encoder`` / ``xnemo_vae`` files without metadata
  (e.g. renamed single-file downloads) are read with the official recipe's configs;
* our bundle: one ``.safetensors`` file with every part under a ``<part>.`` prefix.
"""

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from .checkpoints import CheckpointError, Sources, load_into, read_metadata, read_sources, read_state_dict
from .config import CLIP_IMAGE_ENCODER, SVD_VAE, XNeMoConfig
from .models.motion_encoder import MotionEncoder
from .models.reference import ReferenceUNet
from .models.spatial_guider import SpatialMotionGuider
from .models.unet3d import DenoisingUNet
from .motion import MotionEncoderId

PARTS = ("motion_encoder", "reference_unet", "denoising_unet", "image_encoder", "vae")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
BASE_UNET = Path("sd-image-variations-diffusers/unet")
BASE_IMAGE_ENCODER = Path("sd-image-variations-diffusers/image_encoder")
BASE_VAE = Path("stable-video-diffusion-img2vid-xt/vae")
DEFAULT_PART_CONFIGS = {"image_encoder": CLIP_IMAGE_ENCODER, "vae": SVD_VAE}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class XNeMoModels:
    """Every network of the pipeline, with the configs needed to rebuild them."""

    config: XNeMoConfig
    motion_encoder: MotionEncoder | SpatialMotionGuider
    reference_unet: ReferenceUNet
    denoising_unet: DenoisingUNet
    image_encoder: CLIPVisionModelWithProjection | None = None
    vae: AutoencoderKLTemporalDecoder | None = None
    part_configs: dict = field(default_factory=dict)
    stored_motion_id: MotionEncoderId | None = None
    """Fingerprint of the motion encoder's weights as stored, taken at load before any cast."""

    @property
    def motion_id(self) -> MotionEncoderId:
        """What motion latents this model accepts (see :class:`~xnemo_core.motion.MotionEncoderId`)."""
        if self.stored_motion_id is None:
            self.stored_motion_id = MotionEncoderId.of(self.motion_encoder)
        return self.stored_motion_id

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}

    def to(self, device=None, dtype=None) -> "XNeMoModels":
        for module in self.modules().values():
            # Plain nn.Module.to: diffusers' override warns about fp32 modules on every cast.
            nn.Module.to(module, device=device, dtype=dtype)
        return self


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown precision {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


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
    layout = _BundleLayout(path) if path.is_file() else _FolderLayout(path)
    config = layout.config()
    motion_encoder = _load_motion_encoder(layout, config)
    models = XNeMoModels(
        config=config,
        motion_encoder=motion_encoder,
        reference_unet=_load_unet(layout, "reference_unet", config, allow_missing=()),
        denoising_unet=_load_unet(layout, "denoising_unet", config, allow_missing),
        **{
            part: _load_optional(layout, part, build, what)
            for part, (build, what) in BASE_PARTS.items()
            if part not in skip
        },
    )
    models.part_configs = layout.part_configs
    models.stored_motion_id = MotionEncoderId.of(motion_encoder)
    for module in models.modules().values():
        module.eval().requires_grad_(False)
    return models.to(device=device, dtype=parse_dtype(dtype))


def part_config(path: str | Path, part: str) -> dict | None:
    """The config of a base part (``"vae"``, ``"image_encoder"``) of the model at ``path``, read
    without its weights; ``None`` when the model has no such part."""
    path = Path(path)
    return (_BundleLayout(path) if path.is_file() else _FolderLayout(path)).part_config(part)


def build_motion_encoder(config: XNeMoConfig) -> MotionEncoder | SpatialMotionGuider:
    """The part that reads the driving face: X-NeMo's motion encoder, or a comparison model's guider."""
    if config.motion_guidance == "spatial":
        return SpatialMotionGuider(**config.motion_encoder)
    if config.motion_guidance != "tokens":
        raise CheckpointError(f"unknown motion_guidance {config.motion_guidance!r} in the model config")
    return MotionEncoder(**config.motion_encoder)


def _load_motion_encoder(layout, config: XNeMoConfig) -> MotionEncoder | SpatialMotionGuider:
    module = build_motion_encoder(config)
    load_into(module, layout.sources("motion_encoder"), what="motion encoder")
    return module


def _load_unet(layout, part: str, config: XNeMoConfig, allow_missing) -> nn.Module:
    build = {
        "reference_unet": lambda: ReferenceUNet(**config.unet),
        "denoising_unet": lambda: DenoisingUNet(config.unet, config.frame_modules),
    }[part]
    # The meta device skips random initialisation; tolerated gaps need a real one.
    with torch.device("cpu" if allow_missing else "meta"):
        module = build()
    what = part.replace("_", " ").replace("unet", "UNet")
    base = layout.base_unet() if part == "denoising_unet" else []
    load_into(module, layout.sources(part), what=what, allow_missing=allow_missing, base=base)
    return module


def build_image_encoder(config: dict) -> CLIPVisionModelWithProjection:
    fields = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**fields))


def build_vae(config: dict) -> AutoencoderKLTemporalDecoder:
    with torch.device("meta"):
        return AutoencoderKLTemporalDecoder(**{k: v for k, v in config.items() if not k.startswith("_")})


def load_vae(folder: str | Path) -> tuple[AutoencoderKLTemporalDecoder, dict]:
    """The VAE of a diffusers VAE folder (``config.json`` + weights) or of a model folder, loaded
    strictly in float32; returns it and its config."""
    folder = Path(folder)
    weights = _diffusers_weights(folder)
    if (folder / "config.json").is_file() and weights is not None:
        config, sources = json.loads((folder / "config.json").read_text()), read_sources([weights])
    elif folder.is_dir() and (found := _FolderLayout(folder).optional_part("vae")):
        config, sources = found
    else:
        raise CheckpointError(
            f"{folder}: expected a diffusers VAE folder (config.json and a weight file) or a model folder with a VAE"
        )
    vae = build_vae(config)
    load_into(vae, sources, what="VAE")
    return vae.float(), config


BASE_PARTS = {"image_encoder": (build_image_encoder, "CLIP image encoder"), "vae": (build_vae, "VAE")}
"""The optional parts taken from the base models: builder and name for messages."""


def _load_optional(layout, part: str, build, what: str) -> nn.Module | None:
    """A base-model part (CLIP, VAE): ``None`` when the layout has none."""
    found = layout.optional_part(part)
    if found is None:
        return None
    config, sources = found
    module = build(config)
    load_into(module, sources, what=what)
    return module


class _FolderLayout:
    def __init__(self, folder: Path):
        self.folder = folder
        self.part_configs: dict = {}

    def _find(self, stem: str) -> Path | None:
        for suffix in WEIGHT_SUFFIXES:
            candidate = self.folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def config(self) -> XNeMoConfig:
        converted = self._find("xnemo_denoising_unet")
        metadata = read_metadata(converted) if converted else {}
        if "xnemo_config" in metadata:
            return XNeMoConfig.from_dict(json.loads(metadata["xnemo_config"]))
        base_config = self.folder / BASE_UNET / "config.json"
        if base_config.is_file():
            return XNeMoConfig(unet=json.loads(base_config.read_text()))
        return XNeMoConfig.official()

    def sources(self, part: str) -> Sources:
        main = self._find(f"xnemo_{part}")
        if main is None:
            raise CheckpointError(
                f"{self.folder}: no xnemo_{part} weights (looked for "
                f"xnemo_{part} with suffix {', '.join(WEIGHT_SUFFIXES)})"
            )
        files = [main]
        if part == "denoising_unet" and (temporal := self._find("xnemo_temporal_module")):
            files.append(temporal)
        return read_sources(files)

    def base_unet(self) -> Sources:
        weights = _diffusers_weights(self.folder / BASE_UNET)
        return read_sources([weights]) if weights else []

    def part_config(self, part: str) -> dict | None:
        """A base part's config (``None`` when the folder has no such part), its weights unread."""
        converted = self._find(f"xnemo_{part}")
        if converted is not None:
            metadata = read_metadata(converted)
            return json.loads(metadata["config"]) if "config" in metadata else DEFAULT_PART_CONFIGS[part]
        config_file = self._base_folder(part) / "config.json"
        return json.loads(config_file.read_text()) if config_file.is_file() else None

    def optional_part(self, part: str):
        config = self.part_config(part)
        if config is None:
            return None
        self.part_configs[part] = config
        weights = self._find(f"xnemo_{part}") or _diffusers_weights(self._base_folder(part))
        if weights is None:
            raise CheckpointError(f"{self._base_folder(part)}: config.json but no weight file next to it")
        return config, read_sources([weights])

    def _base_folder(self, part: str) -> Path:
        return self.folder / {"image_encoder": BASE_IMAGE_ENCODER, "vae": BASE_VAE}[part]


def _diffusers_weights(folder: Path) -> Path | None:
    for name in (
        "diffusion_pytorch_model.safetensors",
        "model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
        "pytorch_model.bin",
    ):
        if (folder / name).is_file():
            return folder / name
    return None


class _BundleLayout:
    def __init__(self, file: Path):
        self.file = file
        self.metadata = read_metadata(file)
        if "xnemo_config" not in self.metadata:
            raise CheckpointError(
                f"{file}: not an X-NeMo bundle (no 'xnemo_config' metadata); pass the folder "
                "that holds the official files instead"
            )
        self.part_configs = json.loads(self.metadata.get("part_configs", "{}"))

    @cached_property
    def tensors(self) -> dict[str, torch.Tensor]:
        return read_state_dict(self.file)

    def config(self) -> XNeMoConfig:
        return XNeMoConfig.from_dict(json.loads(self.metadata["xnemo_config"]))

    def _part(self, part: str) -> dict[str, torch.Tensor]:
        prefix = f"{part}."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def sources(self, part: str) -> Sources:
        tensors = self._part(part)
        if not tensors:
            raise CheckpointError(f"{self.file}: the bundle has no '{part}.' tensors")
        return [(f"{self.file} [{part}]", tensors)]

    def base_unet(self) -> Sources:
        return []

    def part_config(self, part: str) -> dict | None:
        return self.part_configs.get(part)

    def optional_part(self, part: str):
        if part not in self.part_configs:
            return None
        return self.part_configs[part], self.sources(part)
