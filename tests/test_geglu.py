"""The feed-forward's fused GEGLU computes what diffusers' GEGLU computes, and keeps its keys."""

import importlib.util

import pytest
import torch
from diffusers.models.activations import GEGLU
from fresh_process import run_fresh

from xnemo_core.models.geglu import FusedGEGLU
from xnemo_core.testing.synthetic_weights import preset_models


def test_every_denoiser_geglu_is_fused_with_its_projection_and_keys_kept():
    unet = preset_models("tiny", device="cpu").denoising_unet
    fused = [m for m in unet.modules() if isinstance(m, FusedGEGLU)]
    spatial_and_frame_blocks = [m for m in unet.modules() if hasattr(m, "ff") and hasattr(m.ff, "net")]
    assert not any(type(m) is GEGLU for m in unet.modules())
    projection_keys = [key for key in unet.state_dict() if key.endswith(".ff.net.0.proj.weight")]
    assert len(fused) == len(spatial_and_frame_blocks) == len(projection_keys) > 0


@torch.no_grad()
def test_off_the_kernel_the_fused_geglu_equals_diffusers_bit_for_bit():
    torch.manual_seed(0)
    plain = GEGLU(24, 40)
    tokens = torch.randn(3, 7, 24)
    torch.testing.assert_close(FusedGEGLU(plain.proj)(tokens), plain(tokens), rtol=0, atol=0)


_INTERPRETED_KERNEL_CHECK = """
import torch
import torch.nn.functional as F
from xnemo_core.models.geglu import geglu_kernel

torch.manual_seed(0)
# Rows, channels and inner widths that are not multiples of the blocks.
for rows, channels, launch in [(100, 48, (32, 32, 32, 4, 2)), (64, 40, (64, 16, 16, 4, 2))]:
    tokens = torch.randn(rows, channels, dtype=torch.float16)
    weight = (torch.randn(8 * channels, channels) / channels**0.5).half()
    bias = (torch.randn(8 * channels) * 0.1).half()
    hidden, gate = F.linear(tokens.float(), weight.float(), bias.float()).half().float().chunk(2, dim=-1)
    expected = (hidden * F.gelu(gate).half().float()).half().float()
    out = geglu_kernel(tokens, weight, bias, *launch).float()
    error = ((out - expected).abs() / (1 + expected.abs())).max().item()
    assert out.shape == (rows, 4 * channels) and error < 2e-3, (rows, channels, error)
print("kernel ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (its interpreter runs on CPUs)")
def test_geglu_kernel_matches_the_unfused_layer_in_triton_s_interpreter():
    done = run_fresh(_INTERPRETED_KERNEL_CHECK, TRITON_INTERPRET="1")
    assert done.returncode == 0 and "kernel ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused GEGLU kernel runs on CUDA devices")
@pytest.mark.parametrize("rows, channels", [(4096, 320), (1000, 1280)])
def test_fused_geglu_on_cuda_matches_diffusers_to_fp16_rounding_and_trains_off_the_kernel(rows, channels):
    torch.manual_seed(0)
    plain = GEGLU(channels, 4 * channels).to("cuda", torch.float16)
    tokens = torch.randn(2, rows, channels, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        expected = plain(tokens)
        torch.testing.assert_close(FusedGEGLU(plain.proj)(tokens), expected, rtol=2e-3, atol=2e-3)
    FusedGEGLU(plain.proj)(tokens).float().sum().backward()  # grad wanted: diffusers' computation
    assert plain.proj.weight.grad is not None
