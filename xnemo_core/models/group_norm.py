"""GroupNorm, and GroupNorm followed by SiLU, as Triton kernels for the VAE (its temporal decoder).

The decoder normalises tensors of up to 25 frames × 128 channels × 512² in eager mode. PyTorch's
CUDA GroupNorm reduces each (sample, group) in one thread block: the decoder's temporal blocks
normalise one sample of 32 groups over all frames at once, so 32 blocks do the work of the whole
GPU, and permuted inputs are first copied. On the H200 GroupNorm took 30 % of a 48-frame decode
and its SiLU another pass over memory (``bench/RESULTS.md``). Here three kernels do it: partial
statistics of tiles of every channel line (any number of programs), their combination per group
(Chan's pairwise formula, in fp32), and one pass that normalises, applies the affine and the SiLU.

:func:`fuse_group_norm_silu` swaps the VAE's norms for :class:`FusedGroupNorm` (same
parameters, so the same state-dict keys); it runs PyTorch's ops wherever :func:`kernel_applies`
says no (no Triton, CPUs, gradients). Inputs whose channel lines are not contiguous (channels
last) are copied once first.
"""

import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D, TemporalResnetBlock
from torch import nn

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_BLOCK = 4096
"""Elements of one channel line a program reads (fewer for shorter lines)."""
_TILES_AT_ONCE = 1024
"""Tile statistics the combining kernel loads at a time."""

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only and most Windows installs: PyTorch's GroupNorm everywhere
    triton = None
AVAILABLE = triton is not None

if AVAILABLE:

    @triton.jit
    def _tile_moments_kernel(
        x_ptr,
        moments_ptr,
        stride_n,
        stride_c,
        stride_t,
        line_len,
        frames,
        channels_per_group,
        groups,
        tiles_per_line,
        BLOCK: tl.constexpr,
    ):
        # Program (tile, row): row = sample × group; tile = one BLOCK of one (channel, frame) line.
        tile = tl.program_id(0)
        row = tl.program_id(1)
        line = tile // tiles_per_line
        start = (tile % tiles_per_line) * BLOCK
        n = row // groups
        channel = (row % groups) * channels_per_group + line // frames
        base = n.to(tl.int64) * stride_n + channel.to(tl.int64) * stride_c + (line % frames).to(tl.int64) * stride_t
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < line_len
        x = tl.load(x_ptr + base + offsets, mask=mask, other=0.0).to(tl.float32)
        count = tl.minimum(line_len - start, BLOCK).to(tl.float32)
        mean = tl.sum(x, axis=0) / count
        centred = tl.where(mask, x - mean, 0.0)
        out = moments_ptr + (row.to(tl.int64) * tl.num_programs(0) + tile) * 3
        tl.store(out, count)
        tl.store(out + 1, mean)
        tl.store(out + 2, tl.sum(centred * centred, axis=0))

    @triton.jit
    def _group_statistics_kernel(moments_ptr, stats_ptr, tiles, eps, BLOCK: tl.constexpr):
        # One program per row: its tiles' (count, mean, M2) combined by Chan's formula, chunk by chunk.
        row = tl.program_id(0)
        total = 0.0
        mean = 0.0
        m2 = 0.0
        for start in range(0, tiles, BLOCK):
            index = start + tl.arange(0, BLOCK)
            mask = index < tiles
            at = moments_ptr + (row.to(tl.int64) * tiles + index) * 3
            count = tl.load(at, mask=mask, other=0.0)
            part_mean = tl.load(at + 1, mask=mask, other=0.0)
            part_m2 = tl.load(at + 2, mask=mask, other=0.0)
            chunk_total = tl.sum(count, axis=0)
            chunk_mean = tl.sum(count * part_mean, axis=0) / chunk_total
            spread = part_mean - chunk_mean
            chunk_m2 = tl.sum(part_m2 + count * spread * spread, axis=0)
            merged = total + chunk_total
            delta = chunk_mean - mean
            mean = mean + delta * chunk_total / merged
            m2 = m2 + chunk_m2 + delta * delta * total * chunk_total / merged
            total = merged
        tl.store(stats_ptr + row * 2, mean)
        tl.store(stats_ptr + row * 2 + 1, 1.0 / tl.sqrt(m2 / total + eps))

    @triton.jit
    def _normalize_kernel(
        x_ptr,
        out_ptr,
        stats_ptr,
        weight_ptr,
        bias_ptr,
        stride_n,
        stride_c,
        stride_t,
        line_len,
        frames,
        channels,
        channels_per_group,
        SILU: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # Program (line, block): line = (sample, channel, frame) in the output's contiguous order.
        line = tl.program_id(0)
        channel = (line // frames) % channels
        n = line // (frames * channels)
        row = n * (channels // channels_per_group) + channel // channels_per_group
        mean = tl.load(stats_ptr + row * 2)
        scale = tl.load(stats_ptr + row * 2 + 1) * tl.load(weight_ptr + channel).to(tl.float32)
        shift = tl.load(bias_ptr + channel).to(tl.float32) - mean * scale
        offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < line_len
        source = n.to(tl.int64) * stride_n + channel.to(tl.int64) * stride_c + (line % frames).to(tl.int64) * stride_t
        y = tl.load(x_ptr + source + offsets, mask=mask, other=0.0).to(tl.float32) * scale + shift
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(out_ptr + line.to(tl.int64) * line_len + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


def _as_lines(x: torch.Tensor) -> tuple[int, int, int, tuple[int, int, int]] | None:
    """``x (N, C, *spatial)`` read as ``(N, C, T, S)``: T the frames of a 5-D input (else 1), S the
    rest, contiguous in memory. ``(frames, line_len, channels, strides of N, C, T)``, or ``None``
    where the trailing axes do not merge into one contiguous line."""
    frames = x.shape[2] if x.dim() == 5 else 1
    line_shape = x.shape[3:] if x.dim() == 5 else x.shape[2:]
    expected = 1
    for size, stride in zip(reversed(line_shape), reversed(x.stride()[-len(line_shape) :])):
        if size > 1 and stride != expected:
            return None
        expected *= size
    stride_t = x.stride(2) if x.dim() == 5 else 0
    return frames, expected, x.shape[1], (x.stride(0), x.stride(1), stride_t)


def kernel_applies(x: torch.Tensor) -> bool:
    """Whether :func:`group_norm` runs the kernels on ``x``: Triton, CUDA, no gradient (the kernels
    have no backward), fp16 / bf16 / fp32, ``(N, C, …)`` with 1 to 3 trailing axes."""
    return (
        AVAILABLE
        and x.is_cuda
        and x.dtype in _DTYPES
        and not torch.is_grad_enabled()
        and x.numel() > 0
        and x.dim() in (3, 4, 5)
    )


def group_norm(
    x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float, silu: bool = False
) -> torch.Tensor:
    """``F.group_norm`` (then ``F.silu`` if ``silu``) of ``x (N, C, …)`` by the kernels → a
    contiguous tensor of ``x``'s shape and dtype; only where :func:`kernel_applies`. Statistics
    are fp32 whatever ``x``'s dtype."""
    stats = group_statistics(group_moments(x, groups), eps)
    return normalize(x, stats, groups, weight, bias, silu)


def group_moments(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Partial statistics of ``x (N, C, …)``: ``(N × groups, tiles, 3)`` fp32 rows of (count, mean,
    sum of squared deviations). The tiles of several parts of one tensor (frame slices of a video,
    say) concatenate along axis 1 into the statistics of the whole (:func:`group_statistics`)."""
    if x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    if not kernel_applies(x):
        rows = x.float().reshape(x.shape[0] * groups, -1)
        mean = rows.mean(1)
        spread = (rows - mean[:, None]).square().sum(1)
        return torch.stack([torch.full_like(mean, rows.shape[1]), mean, spread], dim=1)[:, None]
    x, (frames, line_len, _, (stride_n, stride_c, stride_t)) = _lines_of(x)
    rows = x.shape[0] * groups
    block = min(_MAX_BLOCK, triton.next_power_of_2(line_len))
    tiles_per_line = triton.cdiv(line_len, block)
    tiles = x.shape[1] // groups * frames * tiles_per_line
    moments = torch.empty(rows, tiles, 3, device=x.device, dtype=torch.float32)
    _tile_moments_kernel[(tiles, rows)](
        x, moments, stride_n, stride_c, stride_t, line_len, frames, x.shape[1] // groups, groups, tiles_per_line,
        BLOCK=block, num_warps=_warps(block),
    )  # fmt: skip
    return moments


def group_statistics(moments: torch.Tensor, eps: float) -> torch.Tensor:
    """Tiles ``(rows, tiles, 3)`` of :func:`group_moments` → ``(rows, 2)`` fp32 (mean, 1 / std)."""
    if not kernel_applies(moments):
        count, mean, spread = moments.unbind(2)
        total = count.sum(1)
        overall = (count * mean).sum(1) / total
        spread = (spread + count * (mean - overall[:, None]).square()).sum(1)
        return torch.stack([overall, (spread / total + eps).rsqrt()], dim=1)
    moments = moments.contiguous()
    stats = torch.empty(moments.shape[0], 2, device=moments.device, dtype=torch.float32)
    _group_statistics_kernel[(moments.shape[0],)](moments, stats, moments.shape[1], eps, BLOCK=_TILES_AT_ONCE)
    return stats


def normalize(
    x: torch.Tensor, stats: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, silu: bool = False
) -> torch.Tensor:
    """``x (N, C, …)`` normalised with ``stats`` (:func:`group_statistics`, which may come from a
    larger tensor than ``x``), then the affine, then SiLU if ``silu``: a contiguous tensor of
    ``x``'s shape and dtype."""
    if not kernel_applies(x):
        mean, inverse_std = stats.view(x.shape[0], groups, 1, 2).unbind(3)
        scale = (inverse_std * weight.float().view(groups, -1)).flatten(1)
        shift = bias.float() - (mean * scale.view(x.shape[0], groups, -1)).flatten(1)
        trailing = (1,) * (x.dim() - 2)
        y = x.float() * scale.view(*scale.shape, *trailing) + shift.view(*shift.shape, *trailing)
        return (F.silu(y) if silu else y).to(x.dtype).contiguous()
    x, (frames, line_len, channels, (stride_n, stride_c, stride_t)) = _lines_of(x)
    block = min(_MAX_BLOCK, triton.next_power_of_2(line_len))
    out = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    _normalize_kernel[(x.shape[0] * channels * frames, triton.cdiv(line_len, block))](
        x, out, stats, weight, bias, stride_n, stride_c, stride_t, line_len, frames, channels, channels // groups,
        SILU=silu, BLOCK=block, num_warps=_warps(block),
    )  # fmt: skip
    return out


def _lines_of(x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """``x`` and :func:`_as_lines` of it, after one copy where its lines are not contiguous (channels last, say)."""
    lines = _as_lines(x)
    if lines is None:
        x = x.contiguous()
        lines = _as_lines(x)
    return x, lines


def _warps(block: int) -> int:
    return 8 if block >= 2048 else 4


class FusedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm``, optionally followed by SiLU, by the kernels where they apply; the same
    parameters (and state-dict keys) as the norm it replaces."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, silu: bool = False, **kwargs):
        super().__init__(num_groups, num_channels, eps=eps, affine=True, **kwargs)
        self.silu = silu

    @classmethod
    def replacing(cls, norm: nn.GroupNorm, silu: bool) -> "FusedGroupNorm":
        """A norm sharing ``norm``'s parameters (an affine one)."""
        fused = cls(norm.num_groups, norm.num_channels, norm.eps, silu, device="meta")
        fused.weight, fused.bias = norm.weight, norm.bias
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernel_applies(x):
            return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.silu)
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.silu(x) if self.silu else x

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, silu={self.silu}"


def _fusable(norm: nn.Module, activation: nn.Module) -> bool:
    return type(norm) is nn.GroupNorm and norm.affine and isinstance(activation, nn.SiLU)


def fuse_group_norm_silu(vae: nn.Module) -> int:
    """Swap every ``GroupNorm → SiLU`` of ``vae``'s diffusers blocks (resnet blocks that take no
    time embedding, whose activation follows each norm, and the encoder's and decoder's output
    norms) for :class:`FusedGroupNorm`, the activation for an identity. The same results up to
    rounding (the same bits where PyTorch's ops run); other modules (a ComfyUI VAE's, say) are
    left alone. Returns the number of norms swapped (0 the
    second time)."""
    swapped = 0
    for block in vae.modules():
        if isinstance(block, (ResnetBlock2D, TemporalResnetBlock)) and block.time_emb_proj is None:
            if _fusable(block.norm1, block.nonlinearity) and _fusable(block.norm2, block.nonlinearity):
                block.norm1 = FusedGroupNorm.replacing(block.norm1, silu=True)
                block.norm2 = FusedGroupNorm.replacing(block.norm2, silu=True)
                block.nonlinearity = nn.Identity()
                swapped += 2
        elif _fusable(getattr(block, "conv_norm_out", None), getattr(block, "conv_act", None)):
            block.conv_norm_out = FusedGroupNorm.replacing(block.conv_norm_out, silu=True)
            block.conv_act = nn.Identity()
            swapped += 1
    return swapped
