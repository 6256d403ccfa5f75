"""Shared fixtures: the project's ../shared folder (skipped when absent) and small model folders."""

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from xnemo_core.checkpoints import save_safetensors
from xnemo_core.convert import write_parts
from xnemo_core.models.motion_encoder import MotionEncoder
from xnemo_core.testing.synthetic_weights import preset_models, with_synthesized_weights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
OFFICIAL_KEYS = SHARED / "docs" / "official-keys"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "golden.json").is_file():
        pytest.skip(f"parity fixtures not found at {FIXTURES} (only in the project's workspace)")
    return FIXTURES


@pytest.fixture(scope="session")
def golden_settings(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "golden.json").read_text())


@pytest.fixture(scope="session")
def official_layout(tmp_path_factory, tiny_models) -> Path:
    """A model folder laid out like the official release, at the tiny preset's UNet, CLIP and VAE
    sizes (the motion encoder has no size option in the official layout: full size).

    The denoiser is split as published: spatial and motion weights in the denoising file,
    temporal modules in their own file. Pickles are tensors-only, as torch.save writes them.
    """
    folder = tmp_path_factory.mktemp("official")
    denoising = tiny_models.denoising_unet.state_dict()
    temporal = {k: v for k, v in denoising.items() if "temporal_modules." in k}
    torch.save({k: v for k, v in denoising.items() if k not in temporal}, folder / "xnemo_denoising_unet.pth")
    torch.save(temporal, folder / "xnemo_temporal_module.pth")
    torch.save(tiny_models.reference_unet.state_dict(), folder / "xnemo_reference_unet.pth")
    torch.save(official_motion_encoder().state_dict(), folder / "xnemo_motion_encoder.pth")
    unet = folder / "sd-image-variations-diffusers" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps(tiny_models.config.unet))
    for sub, weights, part in [
        ("sd-image-variations-diffusers/image_encoder", "model.safetensors", "image_encoder"),
        ("stable-video-diffusion-img2vid-xt/vae", "diffusion_pytorch_model.safetensors", "vae"),
    ]:
        target = folder / sub
        target.mkdir(parents=True)
        (target / "config.json").write_text(json.dumps(tiny_models.part_configs[part]))
        save_safetensors(target / weights, getattr(tiny_models, part).state_dict(), {})
    return folder


@functools.cache
def official_motion_encoder() -> MotionEncoder:
    return with_synthesized_weights(MotionEncoder(), "motion encoder")


def write_state(path: Path, tensors: dict) -> Path:
    if path.suffix == ".safetensors":
        save_safetensors(path, tensors, {})
    else:
        torch.save(tensors, path)
    return path


@pytest.fixture(scope="session")
def tiny_models():
    """Every part at the tiny preset, weights by the rule (no shared files needed)."""
    return preset_models("tiny", device="meta")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_models):
    from xnemo_core.pipeline import XNeMoPipeline

    return XNeMoPipeline(tiny_models)


def random_condition(pipeline, portrait_shape: tuple[int, int], size: int = 64):
    """The reference condition of a random portrait of ``portrait_shape`` and a random face."""
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 256, (*portrait_shape, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    return pipeline.encode_reference(portrait, face, size, size)


def random_motion(frames: int) -> torch.Tensor:
    return torch.randn(frames, 32, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory, tiny_models) -> Path:
    folder = tmp_path_factory.mktemp("tiny_model")
    write_parts(tiny_models, folder)
    return folder


def run_fresh(script: str, **env) -> subprocess.CompletedProcess:
    """``script`` in a new Python process that imports this checkout's packages."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **env, "PYTHONPATH": path}
    command = [sys.executable, "-c", textwrap.dedent(script)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
