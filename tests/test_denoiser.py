"""The denoiser keeps no state between calls and compiles to one graph for every call of a size."""

import pytest
import torch

from xnemo_core.compiling import CompiledDenoiser
from xnemo_core.models.reference import capture_reference, project_reference
from xnemo_core.testing.synthetic_weights import preset_models


@pytest.fixture(scope="module")
def models():
    return preset_models("tiny", device="cpu")


def call_inputs(models, seed: int):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    clip = torch.randn(1, 1, models.config.unet["cross_attention_dim"], generator=generator)
    reference = project_reference(models.denoising_unet, capture_reference(models.reference_unet, latents, clip))
    noisy = torch.randn(2, 4, 3, 8, 8, generator=generator)
    motion = torch.randn(2, 3, 32, 16, generator=generator)
    return noisy, torch.tensor(500 + seed), torch.cat([torch.zeros_like(clip), clip]), motion, reference


@torch.no_grad()
def test_no_state_survives_a_call_in_either_order(models):
    first, second = call_inputs(models, 1), call_inputs(models, 2)
    unet = models.denoising_unet
    alone = [preset_models("tiny", device="cpu").denoising_unet(*inputs, slice(1, None)) for inputs in (first, second)]
    forward = [unet(*inputs, slice(1, None)) for inputs in (first, second)]
    backward = [unet(*inputs, slice(1, None)) for inputs in (second, first)][::-1]
    for fresh, in_order, reversed_order in zip(alone, forward, backward):
        assert torch.equal(fresh, in_order) and torch.equal(fresh, reversed_order)
    assert not torch.equal(forward[0], forward[1])


@torch.no_grad()
def test_one_graph_without_breaks_serves_new_steps_references_and_rows(models, monkeypatch):
    unet = models.denoising_unet
    first = call_inputs(models, 1)
    explanation = torch._dynamo.explain(unet)(*first, slice(1, None))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    graph = torch.compile(unet, fullgraph=True, dynamic=False, backend="eager")
    for seed in (1, 2, 3):
        inputs = call_inputs(models, seed)
        assert torch.equal(graph(*inputs, slice(1, None)), unet(*inputs, slice(1, None)))


@torch.no_grad()
def test_whole_steps_that_keep_deep_features_and_steps_that_reuse_them_are_one_graph_each(models):
    unet = models.denoising_unet
    inputs = call_inputs(models, 1)
    whole, deep = unet(*inputs, slice(1, None), keep_deep=True)
    for options in ({"keep_deep": True}, {"deep_features": deep}):
        explanation = torch._dynamo.explain(unet)(*inputs, slice(1, None), **options)
        assert explanation.graph_count == 1 and explanation.graph_break_count == 0


def test_the_compiled_denoiser_is_kept_with_the_model_and_adds_no_weights(models):
    unet = models.denoising_unet
    keys = set(unet.state_dict())
    assert CompiledDenoiser.of(unet, cuda_graphs=False) is CompiledDenoiser.of(unet, cuda_graphs=False)
    assert set(unet.state_dict()) == keys
