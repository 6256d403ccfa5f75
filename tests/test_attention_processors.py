"""The denoiser's attention processors compute what diffusers' default processor computes."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch.nn.attention import sdpa_kernel

from xnemo_core.models.attention_blocks import SHORT_SEQUENCE_BACKENDS, ShortSequenceAttnProcessor
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
def test_temporal_attentions_prefer_the_short_sequence_backends_and_compute_the_same():
    unet = preset_models("tiny", device="cpu").denoising_unet
    kinds = {}
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            kind = "temporal" if ".temporal_modules." in name else "motion" if ".motion_modules." in name else "spatial"
            kinds.setdefault(kind, set()).add(type(module.processor))
    assert kinds["temporal"] == {ShortSequenceAttnProcessor}
    assert kinds["motion"] == {AttnProcessor2_0}
    assert kinds["spatial"] == {ReferenceAttnProcessor, CrossAttnProcessor}
    attention = next(m for n, m in unet.named_modules() if ".temporal_modules." in n and isinstance(m, Attention))
    frames = torch.randn(6, 5, attention.query_dim)
    result = attention(frames)
    attention.set_processor(AttnProcessor2_0())
    torch.testing.assert_close(result, attention(frames), rtol=0, atol=0)


def test_the_short_sequence_backends_trace_into_one_graph():
    def attend(query, key, value):
        with sdpa_kernel(SHORT_SEQUENCE_BACKENDS):
            return F.scaled_dot_product_attention(query, key, value)

    query = torch.randn(6, 2, 5, 8)
    explanation = torch._dynamo.explain(attend)(query, query, query)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the backend choice applies on CUDA devices")
@torch.no_grad()
def test_temporal_attention_on_cuda_matches_the_default_backends_to_fp16_rounding():
    torch.manual_seed(0)
    attention = Attention(query_dim=320, heads=8, dim_head=40).eval().to("cuda", torch.float16)
    frames = torch.randn(512, 24, 320, device="cuda", dtype=torch.float16)
    expected = attention(frames)
    attention.set_processor(ShortSequenceAttnProcessor())
    torch.testing.assert_close(attention(frames), expected, rtol=2e-3, atol=2e-3)
