"""Attention over a few keys (a window's frames, a frame's motion tokens) as one Triton kernel.

The denoiser's frame modules attend over at most a few dozen keys: temporal attention over the 24
frames of a window at every pixel, motion attention of every pixel over a frame's 32 motion tokens.
PyTorch's attention kernels tile keys and queries in blocks of 64 or more and stream the keys in
an online softmax, which for such short sequences leaves most of every tile idle: on the H200 the
64×64 temporal site moves its inputs at about a sixth of the memory bandwidth. Here all keys of a
head fit in one tile, so a program reads a block of queries of one head (a :class:`Launch` may
group heads) with that head's keys and values once, and does the softmax in one pass (3.6× faster
than PyTorch's best kernel at that site, ``bench/RESULTS.md``).

:func:`kernel_applies` says where the kernel runs (Triton installed, CUDA, fp16 / bf16, no
gradient wanted, at most :data:`MAX_KEYS` keys, at least :data:`MIN_PROGRAMS` programs); callers
keep PyTorch's attention everywhere else. The kernel is a ``torch.library.triton_op``:
``torch.compile`` traces it into the denoiser's graph like any other op.
"""

from typing import NamedTuple

import torch

MAX_KEYS = 64
"""Longest key sequence the kernel takes (one register tile per head)."""
MAX_HEAD_DIM = 256
MIN_PROGRAMS = 16384
"""Fewest kernel programs (sequences × query blocks × head groups) for which the kernel is used:
the 64² and 32² temporal sites and the 64² motion site of the full-size denoiser, where
``bench/attention_sites.py`` has it fastest. Smaller sites keep PyTorch's kernels: they beat the
kernel's earlier launch (all heads a program) there, and one head a program is not yet timed
at them (``bench/RESULTS.md``)."""
_DTYPES = (torch.float16, torch.bfloat16)


class Launch(NamedTuple):
    """How the kernel splits the work: heads and queries a program takes, warps a program runs."""

    heads_per_program: int
    block_q: int
    num_warps: int

    def query_blocks(self, query_len: int) -> int:
        return -(-query_len // self.block_q)

    def programs(self, count: int, query_len: int, heads: int) -> int:
        return count * self.query_blocks(query_len) * (heads // self.heads_per_program)


try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only and most Windows installs: PyTorch's attention everywhere
    triton = None
# torch.compile traces Triton kernels registered through these (PyTorch 2.6 and later).
AVAILABLE = triton is not None and hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")

if AVAILABLE:

    @triton.jit
    def _few_key_attention_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        out_ptr,
        q_stride_n,
        q_stride_l,
        k_stride_n,
        k_stride_l,
        v_stride_n,
        v_stride_l,
        out_stride_n,
        out_stride_l,
        query_len,
        key_len,
        query_blocks,
        scale,
        HEADS: tl.constexpr,
        HEADS_PER_PROGRAM: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_Q: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        # Programs run head groups fastest, so neighbours read neighbouring channels of the same rows.
        program = tl.program_id(0)
        head_groups: tl.constexpr = HEADS // HEADS_PER_PROGRAM
        first_head = (program % head_groups) * HEADS_PER_PROGRAM
        block = program // head_groups
        n = (block // query_blocks).to(tl.int64)
        rows = (block % query_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        keys = tl.arange(0, BLOCK_K)
        dims = tl.arange(0, BLOCK_D)
        row_mask = (rows < query_len)[:, None] & (dims < HEAD_DIM)[None, :]
        key_mask = (keys < key_len)[:, None] & (dims < HEAD_DIM)[None, :]
        for head in tl.static_range(HEADS_PER_PROGRAM):
            columns = (first_head + head) * HEAD_DIM + dims[None, :]
            query = tl.load(q_ptr + n * q_stride_n + rows[:, None] * q_stride_l + columns, mask=row_mask, other=0.0)
            key = tl.load(k_ptr + n * k_stride_n + keys[:, None] * k_stride_l + columns, mask=key_mask, other=0.0)
            value = tl.load(v_ptr + n * v_stride_n + keys[:, None] * v_stride_l + columns, mask=key_mask, other=0.0)
            scores = tl.dot(query, tl.trans(key)) * scale
            scores = tl.where((keys < key_len)[None, :], scores, float("-inf"))
            weights = tl.exp(scores - tl.max(scores, axis=1)[:, None])
            weights = weights / tl.sum(weights, axis=1)[:, None]
            out = tl.dot(weights.to(value.dtype), value)
            target = out_ptr + n * out_stride_n + rows[:, None] * out_stride_l + columns
            tl.store(target, out.to(out_ptr.dtype.element_ty), mask=row_mask)

    @torch.library.triton_op("xnemo::few_key_attention", mutates_args=())
    def few_key_attention_kernel(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        heads: int,
        scale: float,
        heads_per_program: int,
        block_q: int,
        num_warps: int,
    ) -> torch.Tensor:
        """Multi-head attention of ``query (N, Lq, C)`` over ``key`` / ``value (N, Lk, C)`` →
        ``(N, Lq, C)``, heads side by side in ``C``. Any strides but a contiguous last axis. A
        program takes ``heads_per_program`` heads of ``block_q`` queries (a :class:`Launch`)."""
        if heads % heads_per_program:
            raise ValueError(f"{heads} heads do not split into groups of {heads_per_program}")
        count, query_len, channels = query.shape
        head_dim = channels // heads
        out = query.new_empty(count, query_len, channels)
        launch = Launch(heads_per_program, block_q, num_warps)
        grid = (launch.programs(count, query_len, heads),)
        torch.library.wrap_triton(_few_key_attention_kernel)[grid](
            query,
            key,
            value,
            out,
            query.stride(0),
            query.stride(1),
            key.stride(0),
            key.stride(1),
            value.stride(0),
            value.stride(1),
            out.stride(0),
            out.stride(1),
            query_len,
            key.shape[1],
            launch.query_blocks(query_len),
            scale,
            HEADS=heads,
            HEADS_PER_PROGRAM=heads_per_program,
            HEAD_DIM=head_dim,
            BLOCK_Q=block_q,
            BLOCK_K=max(16, triton.next_power_of_2(key.shape[1])),
            BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
            num_warps=num_warps,
        )
        return out


def launch_for(query_len: int, head_dim: int) -> Launch:
    """The launch used for ``query_len`` queries of ``head_dim`` channels a head: one head a program
    (neighbouring programs then read neighbouring channels), up to 64 queries, 2 warps for tiles of
    up to 32 × 64 (``bench/attention_sites.py --launches``, the fastest at the 64² sites)."""
    block_q = min(64, max(16, 1 << (query_len - 1).bit_length()))
    return Launch(heads_per_program=1, block_q=block_q, num_warps=2 if block_q <= 32 and head_dim <= 64 else 4)


def kernel_applies(tokens: torch.Tensor, key_len: int, heads: int) -> bool:
    """Whether :func:`few_key_attention` takes attention of ``tokens (N, Lq, C)`` over ``key_len``
    keys with ``heads`` heads."""
    count, query_len, channels = tokens.shape
    head_dim = channels // heads
    return (
        AVAILABLE
        and tokens.is_cuda
        and tokens.dtype in _DTYPES
        and not torch.is_grad_enabled()  # the kernel has no backward
        and key_len <= MAX_KEYS
        and head_dim <= MAX_HEAD_DIM
        and launch_for(query_len, head_dim).programs(count, query_len, heads) >= MIN_PROGRAMS
    )


def few_key_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float
) -> torch.Tensor:
    """Scaled dot-product attention of ``(N, L, C)`` projections (heads side by side in ``C``) by
    the few-key kernel → ``(N, Lq, C)``; only where :func:`kernel_applies`."""
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    launch = launch_for(query.shape[1], query.shape[2] // heads)
    return few_key_attention_kernel(query, key, value, heads, scale, *launch)
