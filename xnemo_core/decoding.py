"""Latents → frames with the temporal VAE decoder, in frame slices where memory is short.

The official recipe decodes 25 frames at a time, and the SVD decoder's activations for that many
frames at 512² take about 12 GiB. Yet most of its layers work frame by frame; only the temporal
res blocks mix frames, through convolutions that reach one frame either side and GroupNorms whose
statistics span every frame of the chunk. :func:`decode_in_slices` runs the decoder layer by
layer: frame-wise layers on a few frames at a time, temporal convolutions on slices with one halo
frame either side, temporal norms from statistics gathered over all slices first. The result is
the whole-chunk decode's up to rounding, while only two full-chunk activations of one layer are
held at once (about 3 GiB at 512²).
"""

from collections.abc import Callable, Iterator

import torch
from diffusers import AutoencoderTiny
from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import TemporalDecoder
from diffusers.models.resnet import ResnetBlock2D, SpatioTemporalResBlock, TemporalResnetBlock
from einops import rearrange
from torch import nn

from .finite import check_finite
from .models.group_norm import group_moments, group_statistics, normalize

FrameOp = Callable[[torch.Tensor], torch.Tensor]
"""A layer that maps frames ``(f, C, H, W)`` to frames independently of each other."""

STREAM_BYTES_PER_PIXEL = 320
"""Bytes per output pixel and byte of dtype that decoding in slices holds for the whole chunk
(two and a half activations of the widest full-resolution layer, 128 channels): 3.86 GiB for 25
frames at 512² in fp16, measured on an H100 (``bench/RESULTS.md``)."""
SLICE_BYTES_PER_PIXEL = 768
"""The same for each frame of a slice: 0.375 GiB a frame at 512² in fp16."""
DECODE_MEMORY = int(4.3 * 2**30)
"""GPU memory a decode may take at least, beside the model: at 512² slices of one frame (4.23 GiB
measured), so that the official recipe peaks below 10 GiB; the whole chunk took 12.5 GiB."""
FASTEST_SLICE_FRAMES = 8
"""The fastest slice measured for a 25-frame chunk at 512² on an H100 (1, 2, 4, 8 frames and the whole
chunk: 63, 48, 39, 35 and 40 ms a frame, ``bench/RESULTS.md``), at 7.6 GiB: one-frame slices take
almost twice as long, which a short sampling schedule feels."""


def slice_frames_for(memory: int, chunk: int, height: int, width: int, itemsize: int) -> int:
    """Frames per slice for a ``chunk``-frame decode of ``height × width`` frames in ``memory``
    bytes: as many as fit beside the full-chunk activations, from 1 to ``chunk``."""
    pixels = height * width * itemsize
    spare = memory - chunk * STREAM_BYTES_PER_PIXEL * pixels
    return int(max(1, min(chunk, spare // (SLICE_BYTES_PER_PIXEL * pixels))))


def auto_slice_frames(free: int, chunk: int, height: int, width: int, itemsize: int) -> int:
    """Frames per slice where ``free`` bytes are free: slices of up to :data:`FASTEST_SLICE_FRAMES`
    in half the free memory, never less than :data:`DECODE_MEMORY` allows (a card that the model
    nearly fills decodes in the smallest slices; one with room, in the fastest)."""
    memory = min(free, max(DECODE_MEMORY, free // 2))
    return min(FASTEST_SLICE_FRAMES, slice_frames_for(memory, chunk, height, width, itemsize))


def free_device_memory(device: torch.device) -> int | None:
    """Bytes a CUDA ``device`` can still give this process (free on the card plus what PyTorch's
    cache holds unused); ``None`` for other devices."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def decode_video(
    vae: nn.Module, latents: torch.Tensor, chunk: int, device: torch.device, slice_frames: int | None = None
) -> torch.Tensor:
    """Scaled latents ``(1, 4, F, h, w)`` → frames ``(F, H, W, 3)`` float32 in ``[0, 1]`` on the
    CPU, ``chunk`` frames per decoder call (as the official recipe). ``slice_frames``: frames at a
    time within a chunk (:func:`decode_in_slices`); ``None`` picks them on CUDA from the free memory
    (:func:`auto_slice_frames`), and decodes whole chunks elsewhere."""
    frames = rearrange(latents[0], "c f h w -> f c h w") / vae.config.scaling_factor
    decoded = []
    for start in range(0, len(frames), chunk):
        part = frames[start : start + chunk].to(device, vae.dtype)
        pixels = _decode_chunk(vae, part, device, slice_frames)
        check_finite("the VAE decoder", pixels)
        decoded.append((pixels.float() / 2 + 0.5).clamp(0, 1).cpu())
    return rearrange(torch.cat(decoded), "f c h w -> f h w c")


def _decode_chunk(vae: nn.Module, latents: torch.Tensor, device: torch.device, slice_frames: int | None):
    if isinstance(vae, AutoencoderTiny):  # frame by frame by design: no temporal layers to slice
        return vae.decode(latents).sample
    slice_frames = _slice_frames(vae, latents, device, slice_frames)
    if slice_frames is None or slice_frames >= len(latents):
        return vae.decode(latents, num_frames=len(latents)).sample
    return decode_in_slices(vae.decoder, latents, slice_frames)


def _slice_frames(vae: nn.Module, latents: torch.Tensor, device: torch.device, asked: int | None) -> int | None:
    """Frames per slice for a chunk ``latents``: ``asked``, else sized from the free CUDA memory;
    ``None`` (the whole chunk) for VAEs without a temporal decoder (a ComfyUI VAE manages its own
    memory) and off CUDA."""
    if not isinstance(getattr(vae, "decoder", None), TemporalDecoder):
        return None
    if asked is not None:
        return asked
    free = free_device_memory(device)
    if free is None:
        return None
    height, width = (8 * size for size in latents.shape[-2:])
    return auto_slice_frames(free, len(latents), height, width, latents.element_size())


def decode_in_slices(decoder: TemporalDecoder, latents: torch.Tensor, slice_frames: int) -> torch.Tensor:
    """``decoder(latents, num_frames=F)`` for latents ``(F, 4, h, w)`` (one chunk, one video),
    ``slice_frames`` frames at a time → ``(F, 3, H, W)``."""
    frames = latents
    pending: list[FrameOp] = []
    for layer in _layers(decoder):
        if isinstance(layer, SpatioTemporalResBlock):
            frames = _frame_wise([*pending, _spatial(layer.spatial_res_block)], frames, slice_frames)
            pending = []
            _mix_in_time(layer, frames, slice_frames)
        else:
            pending.append(layer)
    frames = _frame_wise(pending, frames, slice_frames)
    video = rearrange(frames, "f c h w -> 1 c f h w")
    return rearrange(decoder.time_conv_out(video), "1 c f h w -> f c h w")


def _layers(decoder: TemporalDecoder) -> Iterator[FrameOp | SpatioTemporalResBlock]:
    """The decoder's forward as a sequence: frame-wise layers and spatio-temporal res blocks."""
    yield decoder.conv_in
    mid = decoder.mid_block
    yield mid.resnets[0]
    for resnet, attention in zip(mid.resnets[1:], mid.attentions):
        yield attention
        yield resnet
    upscale_dtype = next(decoder.up_blocks.parameters()).dtype
    yield lambda x: x.to(upscale_dtype)
    for block in decoder.up_blocks:
        yield from block.resnets
        yield from block.upsamplers or ()
    yield from (decoder.conv_norm_out, decoder.conv_act, decoder.conv_out)


def _spatial(block: ResnetBlock2D) -> FrameOp:
    return lambda x: block(x, None)


def _frame_wise(layers: list[FrameOp], frames: torch.Tensor, slice_frames: int) -> torch.Tensor:
    """``layers`` applied in turn to ``frames (F, …)``, ``slice_frames`` at a time; written over
    ``frames`` where the shape stays (each slice is read before it is overwritten)."""
    if not layers:
        return frames
    out = None
    for start in range(0, len(frames), slice_frames):
        part = frames[start : start + slice_frames]
        for layer in layers:
            part = layer(part)
        if out is None:
            same = part.shape[1:] == frames.shape[1:] and part.dtype == frames.dtype
            out = frames if same else part.new_empty((len(frames), *part.shape[1:]))
        out[start : start + len(part)] = part
    return out


def _mix_in_time(block: SpatioTemporalResBlock, frames: torch.Tensor, slice_frames: int) -> None:
    """The temporal half of ``block`` on its spatial half's output ``frames (F, C, H, W)``, in place."""
    temporal: TemporalResnetBlock = block.temporal_res_block
    hidden = _temporal_conv(temporal.conv1, temporal.norm1, temporal.nonlinearity, frames, slice_frames)
    stats = _statistics(temporal.norm2, hidden, slice_frames)
    for part, halo in _with_halo(len(hidden), slice_frames):
        update = _temporal_conv_part(temporal.conv2, temporal.norm2, temporal.nonlinearity, hidden, stats, part, halo)
        own = _as_video(frames[part])
        residual = own if temporal.conv_shortcut is None else temporal.conv_shortcut(own)
        indicator = own.new_zeros(1, own.shape[2])
        mixed = block.time_mixer(own, residual + temporal.dropout(update), image_only_indicator=indicator)
        frames[part] = rearrange(mixed, "1 c f h w -> f c h w")


def _temporal_conv(conv: nn.Conv3d, norm: nn.GroupNorm, activation: nn.Module, frames, slice_frames) -> torch.Tensor:
    """``conv(activation(norm(video)))`` of ``frames (F, C, H, W)`` read as one video → ``(F, C', H, W)``."""
    stats = _statistics(norm, frames, slice_frames)
    out = None
    for part, halo in _with_halo(len(frames), slice_frames):
        result = _temporal_conv_part(conv, norm, activation, frames, stats, part, halo)
        if out is None:
            out = result.new_empty((len(frames), result.shape[1], *result.shape[3:]))
        out[part] = rearrange(result, "1 c f h w -> f c h w")
    return out


def _temporal_conv_part(conv, norm, activation, frames, stats, part: slice, halo: slice) -> torch.Tensor:
    """Frames ``part`` of ``conv(activation(norm(video)))``, read from the frames ``halo`` (those
    and one more either side where the video has them), with the norm's ``stats`` of every
    frame → ``(1, C', f, H, W)``."""
    silu = getattr(norm, "silu", False)  # a fused norm applies the activation itself
    normalized = normalize(_as_video(frames[halo]), stats, norm.num_groups, norm.weight, norm.bias, silu)
    return conv(activation(normalized))[:, :, part.start - halo.start : part.stop - halo.start]


def _statistics(norm: nn.GroupNorm, frames: torch.Tensor, slice_frames: int) -> torch.Tensor:
    """``norm``'s statistics of ``frames (F, C, H, W)`` read as one video, gathered slice by slice."""
    moments = [group_moments(_as_video(frames[part]), norm.num_groups) for part in _slices(len(frames), slice_frames)]
    return group_statistics(torch.cat(moments, dim=1), norm.eps)


def _with_halo(count: int, slice_frames: int) -> Iterator[tuple[slice, slice]]:
    """``(frames, frames to read)``: each slice of ``count`` frames, and it with one more frame
    either side where there is one."""
    for part in _slices(count, slice_frames):
        yield part, slice(max(part.start - 1, 0), min(part.stop + 1, count))


def _slices(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _as_video(frames: torch.Tensor) -> torch.Tensor:
    """``(f, C, H, W)`` → a ``(1, C, f, H, W)`` view, the layout of diffusers' temporal layers."""
    return rearrange(frames, "f c h w -> 1 c f h w")
