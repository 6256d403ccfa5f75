"""The denoiser's attention processors compute what diffusers' default processor computes."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from conftest import run_fresh
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn
from torch.nn.attention import sdpa_kernel

from xnemo_core.models.attention_blocks import SHORT_SEQUENCE_BACKENDS, FewKeyAttnProcessor, joint_linear
from xnemo_core.models.few_key_attention import MIN_PROGRAMS, kernel_applies, launch_for
from xnemo_core.models.reference import CrossAttnProcessor, ReferenceAttnProcessor
from xnemo_core.testing.synthetic_weights import preset_models


def cross_attention(context_dim: int, out_dim: int | None = None) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=32, cross_attention_dim=context_dim, heads=4, dim_head=8, out_dim=out_dim).eval()


def query_projections(attention: Attention) -> list:
    calls = []
    attention.to_q.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("context_tokens, out_dim", [(1, None), (3, None), (1, 48)])
@torch.no_grad()
def test_cross_attention_equals_diffusers_and_skips_queries_over_one_context_token(context_tokens, out_dim):
    attention = cross_attention(24, out_dim)
    tokens, context = torch.randn(2, 10, 32), torch.randn(2, context_tokens, 24)
    expected = attention(tokens, encoder_hidden_states=context)
    attention.set_processor(CrossAttnProcessor())
    calls = query_projections(attention)
    result = attention(tokens, encoder_hidden_states=context)
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)
    assert len(calls) == (0 if context_tokens == 1 else 1)


@torch.no_grad()
def test_one_token_shortcut_is_not_taken_when_a_mask_could_change_the_weights():
    attention = cross_attention(24)
    attention.set_processor(CrossAttnProcessor())
    calls = query_projections(attention)
    tokens, context = torch.randn(2, 10, 32), torch.randn(2, 1, 24)
    attention(tokens, encoder_hidden_states=context, attention_mask=torch.zeros(2, 1))
    assert calls == [1]


@torch.no_grad()
def test_frame_module_attentions_take_the_few_key_processor_and_compute_the_same_on_cpu():
    unet = preset_models("tiny", device="cpu").denoising_unet
    kinds = {}
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            kind = "temporal" if ".temporal_modules." in name else "motion" if ".motion_modules." in name else "spatial"
            kinds.setdefault(kind, set()).add(type(module.processor))
            if kind != "spatial":
                expected = SHORT_SEQUENCE_BACKENDS if kind == "temporal" else None
                assert module.processor.fallback_backends == expected
    assert kinds["temporal"] == kinds["motion"] == {FewKeyAttnProcessor}
    assert kinds["spatial"] == {ReferenceAttnProcessor, CrossAttnProcessor}
    attention = next(m for n, m in unet.named_modules() if ".temporal_modules." in n and isinstance(m, Attention))
    frames = torch.randn(6, 5, attention.query_dim)
    result = attention(frames)
    attention.set_processor(AttnProcessor2_0())
    torch.testing.assert_close(result, attention(frames), rtol=0, atol=0)


@torch.no_grad()
def test_few_key_processor_takes_feature_maps_as_diffusers_does():
    attention = Attention(query_dim=32, heads=4, dim_head=8).eval()
    features = torch.randn(2, 32, 3, 4)  # (N, C, H, W): diffusers flattens them to tokens
    expected = attention(features)
    attention.set_processor(FewKeyAttnProcessor())
    torch.testing.assert_close(attention(features), expected, rtol=0, atol=0)


def test_joint_linear_equals_the_layers_apart_and_keeps_them_apart_with_a_bias():
    torch.manual_seed(0)
    tokens = torch.randn(2, 7, 12)
    plain = tuple(nn.Linear(12, width, bias=False) for width in (12, 12, 5))
    for result, layer in zip(joint_linear(plain, tokens), plain):
        torch.testing.assert_close(result, layer(tokens), rtol=1e-6, atol=1e-6)
    biased = (nn.Linear(12, 12), nn.Linear(12, 12, bias=False))
    results = joint_linear(biased, tokens)
    assert all(result.is_contiguous() for result in results)
    torch.testing.assert_close(results[0], biased[0](tokens), rtol=0, atol=0)


@pytest.mark.parametrize(
    "sequences, queries, head_dim, used",
    # The full-size sites of bench/attention_sites.py: temporal at 64², 32², 16², motion at 64², 32².
    [(8192, 24, 40, True), (2048, 24, 80, True), (512, 24, 160, False), (48, 4096, 40, True), (48, 1024, 80, False)],
)
def test_few_key_kernel_takes_the_sites_where_it_was_measured_faster(sequences, queries, head_dim, used):
    assert (launch_for(queries, head_dim).programs(sequences, queries, heads=8) >= MIN_PROGRAMS) == used


_INTERPRETED_KERNEL_CHECK = """
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from einops import rearrange

from xnemo_core.models import attention_blocks, few_key_attention as module
from xnemo_core.models.few_key_attention import Launch, few_key_attention, few_key_attention_kernel

try:
    torch.library.wrap_triton(module._few_key_attention_kernel)
except RuntimeError:  # PyTorch 2.11 (the device tool's H200) takes compiled kernels only
    print("wrap_triton takes no interpreted kernel")
    raise SystemExit(0)
torch.manual_seed(0)
split = lambda t, h: rearrange(t.float(), "n l (h d) -> n h l d", h=h)
# Shapes of the denoiser's sites: temporal (24 frames, d 40 and 160), motion (32 tokens, several
# query blocks), queries and keys as strided views of one joint projection; the chosen launch and
# launches that group heads.
for count, queries, keys, heads, head_dim in [(5, 24, 24, 8, 40), (3, 100, 32, 4, 20), (2, 24, 24, 2, 160)]:
    channels = heads * head_dim
    joint = torch.randn(count, queries, 3 * channels, dtype=torch.float16)
    query = joint[..., :channels]
    key, value = torch.randn(2, count, keys, channels, dtype=torch.float16).unbind()
    expected = F.scaled_dot_product_attention(split(query, heads), split(key, heads), split(value, heads))
    expected = rearrange(expected, "n h l d -> n l (h d)")
    results = [few_key_attention(query, key, value, heads, head_dim**-0.5)]
    results += [few_key_attention_kernel(query, key, value, heads, head_dim**-0.5, *Launch(h, 32, 2)) for h in (2, heads)]
    for out in results:
        error = (out.float() - expected).abs().max().item()
        assert out.shape == (count, queries, channels) and error < 2e-3, (count, queries, keys, head_dim, error)
try:
    few_key_attention_kernel(query, key, value, heads, 1.0, *Launch(3, 32, 2))
    raise AssertionError("2 heads split into groups of 3")
except ValueError as error:
    assert "2 heads do not split into groups of 3" in str(error), error

# The processor's kernel path (projections, output layer) against diffusers' processor in fp32.
attention_blocks.kernel_applies = lambda *_: True
for context_dim in (None, 16):
    attention = Attention(query_dim=64, cross_attention_dim=context_dim, heads=4, dim_head=16).eval()
    tokens = torch.randn(6, 24, 64)
    context = None if context_dim is None else torch.randn(6, 32, context_dim)
    with torch.no_grad():
        expected = attention(tokens, encoder_hidden_states=context)
        attention.set_processor(attention_blocks.FewKeyAttnProcessor())
        attention.half()
        half = lambda t: None if t is None else t.half()
        result = attention(half(tokens), encoder_hidden_states=half(context)).float()
    error = (result - expected).abs().max().item()
    assert error < 1e-2, (context_dim, error)
print("kernel ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (its interpreter runs on CPUs)")
def test_few_key_kernel_matches_pytorch_attention_in_triton_s_interpreter():
    # The interpreter is chosen when a kernel is defined, so the check runs in a fresh process.
    done = run_fresh(_INTERPRETED_KERNEL_CHECK, TRITON_INTERPRET="1")
    if "wrap_triton takes no interpreted kernel" in done.stdout:
        pytest.skip("this PyTorch's wrap_triton takes no kernel run by Triton's interpreter")
    assert done.returncode == 0 and "kernel ok" in done.stdout, done.stderr[-3000:]


def test_the_short_sequence_backends_trace_into_one_graph():
    def attend(query, key, value):
        with sdpa_kernel(SHORT_SEQUENCE_BACKENDS):
            return F.scaled_dot_product_attention(query, key, value)

    query = torch.randn(6, 2, 5, 8)
    explanation = torch._dynamo.explain(attend)(query, query, query)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0


def test_without_triton_the_kernel_module_imports_and_takes_no_site():
    script = """
import sys
sys.modules["triton"] = None  # what an install without Triton sees: ImportError
import torch
from xnemo_core.models import few_key_attention
assert not few_key_attention.AVAILABLE
tokens = torch.empty(8192, 24, 320, dtype=torch.float16, device="meta")
assert not few_key_attention.kernel_applies(tokens, 24, 8)
print("fallback ok")
"""
    done = run_fresh(script)
    assert done.returncode == 0 and "fallback ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the few-key kernel runs on CUDA devices")
@pytest.mark.parametrize(
    "context_dim, sequences, length, head_dim", [(None, 2048, 24, 40), (None, 2048, 24, 160), (16, 48, 4096, 40)]
)
@torch.no_grad()
def test_few_key_processor_on_cuda_matches_the_default_to_fp16_rounding(context_dim, sequences, length, head_dim):
    torch.manual_seed(0)
    attention = Attention(query_dim=320, cross_attention_dim=context_dim, heads=8, dim_head=head_dim)
    attention = attention.eval().to("cuda", torch.float16)
    tokens = torch.randn(sequences, length, 320, device="cuda", dtype=torch.float16)
    context = None if context_dim is None else torch.randn(sequences, 32, 16, device="cuda", dtype=torch.float16)
    assert kernel_applies(tokens, length if context is None else 32, heads=8)
    with torch.enable_grad():  # the kernel has no backward
        assert not kernel_applies(tokens, length if context is None else 32, heads=8)
    expected = attention(tokens, encoder_hidden_states=context)
    attention.set_processor(FewKeyAttnProcessor())
    torch.testing.assert_close(attention(tokens, encoder_hidden_states=context), expected, rtol=2e-3, atol=2e-3)
