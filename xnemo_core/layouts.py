"""Where a model's parts lie on disk; the first match wins for each part:

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

A layout reads configs and finds weight sources; it builds nothing (:mod:`~xnemo_core.loading` does).
"""

import json
from functools import cached_property
from pathlib import Path

import torch

from .checkpoints import CheckpointError, Sources, read_keys, read_metadata, read_sources, read_state_dict
from .choices import DOWNLOAD_PARTS, command_name
from .config import CLIP_IMAGE_ENCODER, SVD_VAE, XNeMoConfig

LATENT_RGB = "latent_rgb"
"""Metadata of a model's own VAE: its latent-to-RGB preview factors (:mod:`~xnemo_core.previews`)."""
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
BASE_UNET = Path("sd-image-variations-diffusers/unet")
BASE_IMAGE_ENCODER = Path("sd-image-variations-diffusers/image_encoder")
BASE_VAE = Path("stable-video-diffusion-img2vid-xt/vae")
DEFAULT_PART_CONFIGS = {"image_encoder": CLIP_IMAGE_ENCODER, "vae": SVD_VAE}
XNEMO_RELEASE = "https://drive.google.com/drive/folders/1RdjBYYbstO7SOchDg7oimoAwu03g_-mI"
IMAGE_VARIATIONS = "https://huggingface.co/lambdalabs/sd-image-variations-diffusers"
SVD = "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt"
PART_ORIGINS = {
    "denoising_unet": ("denoising UNet", "xnemo_denoising_unet.pth", XNEMO_RELEASE),
    "reference_unet": ("reference UNet", "xnemo_reference_unet.pth", XNEMO_RELEASE),
    "motion_encoder": ("motion encoder", "xnemo_motion_encoder.pth", XNEMO_RELEASE),
    "image_encoder": (
        "CLIP image encoder",
        f"{BASE_IMAGE_ENCODER}/ (config.json, model.safetensors)",
        IMAGE_VARIATIONS,
    ),
    "vae": ("VAE", f"{BASE_VAE}/ (config.json, diffusion_pytorch_model.safetensors)", SVD),
}
"""Per part: its name in words, where it lies in an official-layout folder, and where it is published."""
XNEMO_PARTS = ("denoising_unet", "reference_unet", "motion_encoder")
"""The parts only the X-NeMo release has; the others come from base models (or from ComfyUI)."""


def check_parts(path: Path, parts=tuple(PART_ORIGINS)) -> None:
    """Refuse a model that lacks any of ``parts``, naming each missing one, where it belongs and
    where it comes from, before any weight is read."""
    layout = open_layout(path)
    missing = [part for part in parts if not layout.has_part(part)]
    if missing:
        lines = [f"{PART_ORIGINS[p][0]}: {PART_ORIGINS[p][1]} from {PART_ORIGINS[p][2]}" for p in missing]
        download_parts = sorted({"xnemo" if p in XNEMO_PARTS else p for p in missing}, key=DOWNLOAD_PARTS.index)
        raise CheckpointError(
            f"{path}: the model lacks {len(missing)} part(s):\n  " + "\n  ".join(lines) + "\nfetch them with: "
            f"{command_name()} download {path} --parts {' '.join(download_parts)} (in ComfyUI: the Download "
            "X-NeMo Model node; README: Models). A converted model has xnemo_<part>.safetensors instead"
        )


def open_layout(path: Path) -> "FolderLayout | BundleLayout":
    """The layout of a model folder or bundle file."""
    return BundleLayout(path) if path.is_file() else FolderLayout(path)


class FolderLayout:
    def __init__(self, folder: Path):
        self.folder = folder

    def _find(self, stem: str) -> Path | None:
        for suffix in WEIGHT_SUFFIXES:
            candidate = self.folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def has_part(self, part: str) -> bool:
        if self._find(f"xnemo_{part}") is not None:
            return True
        if part not in DEFAULT_PART_CONFIGS:
            return False
        folder = self._base_folder(part)
        return (folder / "config.json").is_file() and diffusers_weights(folder) is not None

    def recipe(self) -> str | None:
        """The ``recipe`` metadata (JSON) of the converted denoiser file, if any."""
        converted = self._find("xnemo_denoising_unet")
        return read_metadata(converted).get("recipe") if converted else None

    def recipe_source(self) -> Path:
        """The file a recipe is read from (named when it is unusable)."""
        return self._find("xnemo_denoising_unet") or self.folder

    def latent_rgb(self) -> tuple[str, Path] | None:
        """The VAE file's ``latent_rgb`` metadata (:mod:`~xnemo_core.previews`) and that file, if any."""
        converted = self._find("xnemo_vae")
        text = read_metadata(converted).get(LATENT_RGB) if converted else None
        return (text, converted) if text else None

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
        return _read_from(files, part)

    def base_unet(self) -> Sources:
        weights = diffusers_weights(self.folder / BASE_UNET)
        return _read_from([weights], "denoising_unet") if weights else []

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
        weights = self._find(f"xnemo_{part}") or diffusers_weights(self._base_folder(part))
        if weights is None:
            raise CheckpointError(f"{self._base_folder(part)}: config.json but no weight file next to it")
        return config, _read_from([weights], part)

    def _base_folder(self, part: str) -> Path:
        return self.folder / {"image_encoder": BASE_IMAGE_ENCODER, "vae": BASE_VAE}[part]


def _read_from(files: list[Path], part: str) -> Sources:
    """:func:`read_sources`, its errors saying where the right files are published."""
    try:
        return read_sources(files)
    except CheckpointError as error:
        raise CheckpointError(f"{error} (the {PART_ORIGINS[part][0]} is published at {PART_ORIGINS[part][2]})") from None


def diffusers_weights(folder: Path) -> Path | None:
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


class BundleLayout:
    def __init__(self, file: Path):
        self.file = file
        self.metadata = read_metadata(file)
        if "xnemo_config" not in self.metadata:
            raise CheckpointError(
                f"{file}: not an X-NeMo bundle (no 'xnemo_config' metadata); pass the folder "
                "that holds the official files instead"
            )
        self.part_configs = json.loads(self.metadata.get("part_configs", "{}"))

    def has_part(self, part: str) -> bool:
        return part in self.part_names

    @cached_property
    def part_names(self) -> set[str]:
        return {key.split(".", 1)[0] for key in read_keys(self.file)}

    @cached_property
    def tensors(self) -> dict[str, torch.Tensor]:
        return read_state_dict(self.file)

    def config(self) -> XNeMoConfig:
        return XNeMoConfig.from_dict(json.loads(self.metadata["xnemo_config"]))

    def recipe(self) -> str | None:
        return self.metadata.get("recipe")

    def recipe_source(self) -> Path:
        return self.file

    def latent_rgb(self) -> tuple[str, Path] | None:
        text = self.metadata.get(LATENT_RGB)
        return (text, self.file) if text else None

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
