"""The temporal VAE decode in frame slices against diffusers' whole-chunk decode (CPU, float32)."""

from types import SimpleNamespace

import pytest
import torch
from einops import rearrange

from xnemo_core import decoding
from xnemo_core.builders import build_vae
from xnemo_core.config import SMALL_VAE, TINY_VAE
from xnemo_core.decoding import auto_slice_frames, decode_in_slices, decode_video, slice_frames_for
from xnemo_core.models.group_norm import fuse_group_norm_silu
from xnemo_core.testing.synthetic_weights import with_synthesized_weights

GiB = 2**30


def vae_of(config: dict):
    return with_synthesized_weights(build_vae(config), "VAE").requires_grad_(False).eval()


@pytest.fixture(scope="module")
def vae():
    return vae_of(TINY_VAE)


@pytest.fixture(scope="module")
def latents():
    return torch.randn(7, 4, 8, 8, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_the_temporal_layers_mix_frames_so_the_check_below_means_something(vae, latents):
    whole = vae.decode(latents, num_frames=7).sample
    one_by_one = torch.cat([vae.decode(frame[None], num_frames=1).sample for frame in latents])
    assert (whole - one_by_one).abs().max() > 1e-2


@pytest.mark.parametrize("slice_frames", [1, 2, 3, 6, 7])
@torch.no_grad()
def test_slices_give_the_whole_chunk_decode(vae, latents, slice_frames):
    whole = vae.decode(latents, num_frames=7).sample
    sliced = decode_in_slices(vae.decoder, latents, slice_frames)
    assert sliced.shape == whole.shape
    torch.testing.assert_close(sliced, whole, rtol=0, atol=2e-5)


@torch.no_grad()
def test_slices_with_fused_norms_and_a_deeper_decoder(latents):
    vae = vae_of(SMALL_VAE)
    whole = vae.decode(latents, num_frames=7).sample
    fuse_group_norm_silu(vae)
    torch.testing.assert_close(decode_in_slices(vae.decoder, latents, 2), whole, rtol=0, atol=2e-5)


@torch.no_grad()
def test_decode_video_takes_chunks_as_the_official_recipe(vae, latents):
    video = rearrange(latents, "f c h w -> 1 c f h w") * vae.config.scaling_factor
    frames = decode_video(vae, video, chunk=4, device=torch.device("cpu"))
    unscaled = rearrange(video[0], "c f h w -> f c h w") / vae.config.scaling_factor
    chunks = [vae.decode(part, num_frames=len(part)).sample for part in unscaled.split(4)]
    expected = rearrange((torch.cat(chunks) / 2 + 0.5).clamp(0, 1), "f c h w -> f h w c")
    assert torch.equal(frames, expected)  # on a CPU: diffusers' own forward, bit for bit
    sliced = decode_video(vae, video, chunk=4, device=torch.device("cpu"), slice_frames=1)
    torch.testing.assert_close(sliced, expected, rtol=0, atol=2e-5)


@torch.no_grad()
def test_a_vae_without_a_temporal_decoder_decodes_itself(latents):
    calls = []

    def decode(part, num_frames):
        calls.append(num_frames)
        return SimpleNamespace(sample=torch.zeros(num_frames, 3, 64, 64))

    foreign = SimpleNamespace(decode=decode, dtype=torch.float32, config=SimpleNamespace(scaling_factor=1.0))
    video = rearrange(latents, "f c h w -> 1 c f h w")
    frames = decode_video(foreign, video, chunk=5, device=torch.device("cpu"), slice_frames=1)
    assert calls == [5, 2] and frames.shape == (7, 64, 64, 3)


def test_slices_are_sized_to_the_memory_given():
    official = dict(chunk=25, height=512, width=512, itemsize=2)
    full_chunk = 25 * decoding.STREAM_BYTES_PER_PIXEL * 512 * 512 * 2
    per_frame = decoding.SLICE_BYTES_PER_PIXEL * 512 * 512 * 2
    assert slice_frames_for(full_chunk + 3 * per_frame, **official) == 3
    assert slice_frames_for(decoding.DECODE_MEMORY, **official) == 1
    assert slice_frames_for(6 * GiB, **official) == 5
    assert slice_frames_for(0, **official) == 1  # never none: the decode is tried, not refused
    assert slice_frames_for(80 * GiB, **official) == 25
    assert slice_frames_for(decoding.DECODE_MEMORY, chunk=25, height=128, width=128, itemsize=2) == 25


def test_cards_with_room_decode_in_the_fastest_slices_and_full_ones_in_the_smallest():
    official = dict(chunk=25, height=512, width=512, itemsize=2)
    assert auto_slice_frames(6 * GiB, **official) == 1  # a 12 GiB card beside the resident model
    assert auto_slice_frames(9 * GiB, **official) == 1  # half of it: still the smallest slices
    assert auto_slice_frames(12 * GiB, **official) == 5
    assert auto_slice_frames(17 * GiB, **official) == decoding.FASTEST_SLICE_FRAMES  # a 24 GiB card
    assert auto_slice_frames(70 * GiB, **official) == decoding.FASTEST_SLICE_FRAMES  # never the whole chunk
    assert auto_slice_frames(6 * GiB, chunk=25, height=128, width=128, itemsize=2) == decoding.FASTEST_SLICE_FRAMES


def test_no_free_memory_figure_off_cuda():
    assert decoding.free_device_memory(torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_on_cuda_slices_match_the_whole_chunk_within_fp16_noise(latents):
    vae = vae_of(SMALL_VAE).to("cuda", torch.float16)
    fuse_group_norm_silu(vae)
    part = latents.to("cuda", torch.float16)
    whole = vae.decode(part, num_frames=7).sample.float()
    sliced = decode_in_slices(vae.decoder, part, 2).float()
    assert (sliced - whole).abs().max() < 2e-2
