"""Full-size modules, built on the meta device, have exactly the official keys and shapes."""

import pytest
import torch
from conftest import OFFICIAL_KEYS

from xnemo_core.config import XNeMoConfig
from xnemo_core.models.motion_encoder import MotionEncoder
from xnemo_core.models.reference import ReferenceUNet
from xnemo_core.models.unet3d import DenoisingUNet


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    path = OFFICIAL_KEYS / f"{name}.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not found (only in the project's workspace)")
    shapes = {}
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        shapes[key] = () if shape == "scalar" else tuple(int(n) for n in shape.split("x"))
    return shapes


def build(name: str) -> torch.nn.Module:
    config = XNeMoConfig.official()
    with torch.device("meta"):
        return {
            "denoising_unet": lambda: DenoisingUNet(config.unet, config.frame_modules),
            "reference_unet": lambda: ReferenceUNet(**config.unet),
            "motion_encoder": MotionEncoder,
        }[name]()


@pytest.mark.parametrize("name", ["denoising_unet", "reference_unet", "motion_encoder"])
def test_state_dict_equals_official_keys_and_shapes(name):
    expected = official_shapes(name)
    ours = {key: tuple(value.shape) for key, value in build(name).state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}


def test_denoiser_groups_match_the_documented_counts():
    keys = build("denoising_unet").state_dict()
    assert sum("temporal_modules." in k for k in keys) == 588
    assert sum("motion_modules." in k for k in keys) == 546
    assert sum(k.endswith("pos_encoder.pe") for k in keys) == 42
