"""The fused GroupNorm (→ SiLU) kernels of the VAE decoder compute what PyTorch computes."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from conftest import run_fresh
from diffusers import AutoencoderKLTemporalDecoder
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from xnemo_core.builders import build_vae
from xnemo_core.config import TINY_VAE
from xnemo_core.models.group_norm import (
    FusedGroupNorm,
    fuse_group_norm_silu,
    group_moments,
    group_norm,
    group_statistics,
    kernel_applies,
    normalize,
)
from xnemo_core.testing.synthetic_weights import with_synthesized_weights


def tiny_vae() -> AutoencoderKLTemporalDecoder:
    return with_synthesized_weights(build_vae(TINY_VAE), "VAE").requires_grad_(False)


def decode(vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor) -> torch.Tensor:
    return vae.decode(latents, num_frames=len(latents)).sample


@torch.no_grad()
def test_fusing_swaps_every_norm_before_a_silu_and_keeps_keys_and_results():
    vae = tiny_vae()
    keys = {name: tensor.clone() for name, tensor in vae.state_dict().items()}
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = decode(vae, latents), vae.encode(pixels).latent_dist.mean
    blocks = [m for m in vae.modules() if hasattr(m, "time_emb_proj") and hasattr(m, "norm2")]

    assert fuse_group_norm_silu(vae) == 2 * len(blocks) + 2  # and the encoder's and decoder's output norms
    assert fuse_group_norm_silu(vae) == 0
    assert all(isinstance(block.nonlinearity, nn.Identity) for block in blocks)
    for part in (vae.encoder, vae.decoder):
        assert isinstance(part.conv_norm_out, FusedGroupNorm) and part.conv_norm_out.silu
    state = vae.state_dict()
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)
    # On the CPU the fused norms are PyTorch's own ops: the same bits.
    assert torch.equal(decode(vae, latents), expected[0])
    assert torch.equal(vae.encode(pixels).latent_dist.mean, expected[1])


def test_a_norm_whose_block_takes_a_time_embedding_is_left_alone():
    block = ResnetBlock2D(in_channels=32, out_channels=32, temb_channels=16)
    assert fuse_group_norm_silu(block) == 0
    assert type(block.norm1) is nn.GroupNorm and isinstance(block.nonlinearity, nn.SiLU)


def test_the_kernels_take_no_cpu_or_meta_tensor():
    assert not kernel_applies(torch.randn(2, 4, 8, 8))
    meta = torch.empty(2, 4, 8, 8, device="meta")
    assert not kernel_applies(meta)


_INTERPRETED_CHECK = """
import torch
import torch.nn.functional as F

from xnemo_core.builders import build_vae
from xnemo_core.config import TINY_VAE
from xnemo_core.models import group_norm as module
from xnemo_core.testing.synthetic_weights import with_synthesized_weights

torch.manual_seed(0)
module._TILES_AT_ONCE = 16  # so that groups of more tiles combine chunk by chunk
cases = [
    (torch.randn(3, 8, 5, 6) * 3 + 2, 4),  # (N, C, H, W)
    (torch.randn(2, 5, 8, 4, 6).permute(0, 2, 1, 3, 4), 2),  # (B, C, T, H, W) view of (B, T, C, H, W)
    (torch.randn(1, 4, 3, 70, 70) + 50, 2),  # lines longer than a tile, a large mean
    (torch.randn(1, 2, 20, 1, 1), 1),  # more tiles a group than the statistics kernel takes at once
    (torch.randn(2, 4, 33), 2),  # (N, C, L)
    (torch.randn(2, 6, 5, 3).contiguous(memory_format=torch.channels_last), 3),  # read after a copy
]
for x, groups in cases:
    for dtype in (torch.float32, torch.float16):
        weight, bias = torch.randn(2, x.shape[1]).to(dtype).unbind()
        for silu in (False, True):
            expected = F.group_norm(x.to(dtype).float(), groups, weight.float(), bias.float(), 1e-6)
            expected = F.silu(expected) if silu else expected
            out = module.group_norm(x.to(dtype), groups, weight, bias, 1e-6, silu)
            error = (out.float() - expected).abs().max().item()
            limit = 1e-4 if dtype == torch.float32 else 4e-3
            assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous(), (x.shape, dtype)
            assert error < limit, (tuple(x.shape), dtype, silu, error)

# Statistics gathered over frame slices of a video normalise the whole video as one norm.
video = torch.randn(1, 8, 6, 5, 5) * 2 + 1
weight, bias = torch.randn(2, 8).unbind()
parts = [module.group_moments(video[:, :, frames], 4) for frames in (slice(0, 2), slice(2, 5), slice(5, 6))]
stats = module.group_statistics(torch.cat(parts, dim=1), 1e-6)
out = module.normalize(video[:, :, 2:5], stats, 4, weight, bias, silu=True)
expected = F.silu(F.group_norm(video, 4, weight, bias, 1e-6))[:, :, 2:5]
assert (out - expected).abs().max().item() < 1e-4

# A two-level tiny VAE's decode with every fused norm on the kernels, against PyTorch's decode.
two_levels = {**TINY_VAE, "block_out_channels": [32, 32], "down_block_types": ["DownEncoderBlock2D"] * 2}
vae = with_synthesized_weights(build_vae(two_levels), "VAE").requires_grad_(False)
latents = torch.randn(2, 4, 4, 4)
with torch.no_grad():
    expected = vae.decode(latents, num_frames=2).sample
    module.fuse_group_norm_silu(vae)
    module.kernel_applies = lambda x: True
    out = vae.decode(latents, num_frames=2).sample
error = (out - expected).abs().max().item()
assert error < 1e-4, error
print("kernels ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (its interpreter runs on CPUs)")
def test_the_kernels_match_pytorch_in_triton_s_interpreter():
    done = run_fresh(_INTERPRETED_CHECK, TRITON_INTERPRET="1")
    assert done.returncode == 0 and "kernels ok" in done.stdout, done.stderr[-3000:]


def test_without_triton_the_module_imports_and_falls_back():
    script = """
import sys
sys.modules["triton"] = None  # what an install without Triton sees: ImportError
import torch
from xnemo_core.models import group_norm
assert not group_norm.AVAILABLE
norm = group_norm.FusedGroupNorm(2, 4, silu=True)
x = torch.randn(2, 4, 3, 3)
assert torch.equal(norm(x), torch.nn.functional.silu(torch.nn.functional.group_norm(x, 2, norm.weight, norm.bias)))
print("fallback ok")
"""
    done = run_fresh(script)
    assert done.returncode == 0 and "fallback ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the kernels run on CUDA devices")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, layout",
    [
        ((25, 128, 256, 256), "contiguous"),
        ((1, 25, 256, 128, 128), "frames first"),
        ((25, 256, 64, 64), "channels last"),
    ],
)
@torch.no_grad()
def test_on_cuda_the_kernels_match_pytorch_to_rounding(shape, layout, dtype):
    torch.manual_seed(0)
    x = torch.randn(shape, device="cuda", dtype=dtype) * 2 + 1
    if layout == "frames first":  # as the decoder's temporal blocks see them
        x = x.permute(0, 2, 1, 3, 4)
    elif layout == "channels last":
        x = x.contiguous(memory_format=torch.channels_last)
    channels = x.shape[1]
    weight, bias = torch.randn(2, channels, device="cuda", dtype=dtype).unbind()
    assert kernel_applies(x)
    with torch.enable_grad():
        assert not kernel_applies(x)
    expected = F.silu(F.group_norm(x, 32, weight, bias, 1e-6))
    tolerance = 1e-2 if dtype == torch.float16 else 4e-2  # PyTorch rounds before the SiLU, the kernel after
    out = group_norm(x, 32, weight, bias, 1e-6, silu=True)
    torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_statistics_of_slices_normalise_the_whole_on_pytorch_s_ops(dtype):
    video = (torch.randn(2, 6, 5, 4, 3) * 3 + 2).to(dtype)
    weight, bias = torch.randn(2, 6).unbind()
    parts = [group_moments(video[:, :, frames], 3) for frames in (slice(0, 1), slice(1, 4), slice(4, 5))]
    stats = group_statistics(torch.cat(parts, dim=1), 1e-6)
    out = normalize(video[:, :, 1:4], stats, 3, weight, bias)
    expected = F.group_norm(video.float(), 3, weight, bias, 1e-6)[:, :, 1:4]
    assert out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=1e-4 if dtype == torch.float32 else 5e-2)
