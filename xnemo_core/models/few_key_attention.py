"""Attention over a few keys (a window's frames, a frame's motion tokens) as one Triton kernel.

The denoiser's frame modules attend over at most a few dozen keys: temporal attention over the 24
frames of a window at every pixel, motion attention of every pixel over a frame's 32 motion tokens.
PyTorch's attention kernels tile keys and queries in blocks of 64 or more and stream the keys in
an online softmax, which for such short sequences leaves most of every tile idle: on the H200 the
64×64 temporal site moves its inputs at about a sixth of the memory bandwidth. Here all keys of a
head fit in one tile, so a program reads a block of queries and the keys and values once for each
head in turn, and does the softmax in one pass (2.5× faster at that site, ``bench/RESULTS.md``).

:func:`kernel_applies` says where the kernel runs (CUDA, fp16 / bf16, at most :data:`MAX_KEYS`
keys, at least :data:`MIN_PROGRAMS` programs, Triton installed); callers keep PyTorch's attention
everywhere else. The kernel is a ``torch.library.triton_op``: ``torch.compile`` traces it into the
denoiser's graph like any other op.
"""

import torch

MAX_KEYS = 64
"""Longest key sequence the kernel takes (one register tile per head)."""
MAX_HEAD_DIM = 256
MIN_PROGRAMS = 2048
"""Fewest kernel programs (sequences × query blocks) for which the kernel is used. A program works
through its heads one after another, so it needs many programs to fill the GPU: on the H200
(``bench/attention_sites.py``) it beats PyTorch's kernels at the 64×64 and 32×32 temporal sites
(8192 and 2048 programs) and the 64×64 motion site (3072), and loses below (768 and fewer)."""
_DTYPES = (torch.float16, torch.bfloat16)

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only and most Windows installs: PyTorch's attention everywhere
    triton = None
# torch.compile traces Triton kernels registered through these (PyTorch 2.6 and later).
_AVAILABLE = triton is not None and hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")

if _AVAILABLE:

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
        scale,
        HEADS: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_Q: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        n = tl.program_id(0).to(tl.int64)
        rows = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        keys = tl.arange(0, BLOCK_K)
        dims = tl.arange(0, BLOCK_D)
        row_mask = (rows < query_len)[:, None] & (dims < HEAD_DIM)[None, :]
        key_mask = (keys < key_len)[:, None] & (dims < HEAD_DIM)[None, :]
        for head in tl.static_range(HEADS):
            columns = head * HEAD_DIM + dims[None, :]
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
        query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float
    ) -> torch.Tensor:
        """Multi-head attention of ``query (N, Lq, C)`` over ``key`` / ``value (N, Lk, C)`` →
        ``(N, Lq, C)``, heads side by side in ``C``. Any strides but a contiguous last axis."""
        count, query_len, channels = query.shape
        key_len = key.shape[1]
        head_dim = channels // heads
        out = query.new_empty(count, query_len, channels)
        block_q = _query_block(query_len)
        grid = (count, triton.cdiv(query_len, block_q))  # kernel_programs(count, query_len) in all
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
            key_len,
            scale,
            HEADS=heads,
            HEAD_DIM=head_dim,
            BLOCK_Q=block_q,
            BLOCK_K=max(16, triton.next_power_of_2(key_len)),
            BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
            num_warps=8 if head_dim > 128 else 4,
        )
        return out


def _query_block(query_len: int) -> int:
    """Queries a program takes: a power of two from 16 to 64."""
    return min(64, max(16, 1 << (query_len - 1).bit_length()))


def kernel_programs(count: int, query_len: int) -> int:
    """Programs the kernel launches for ``count`` sequences of ``query_len`` queries."""
    return count * -(-query_len // _query_block(query_len))


def kernel_applies(tokens: torch.Tensor, key_len: int, head_dim: int) -> bool:
    """Whether :func:`few_key_attention` takes attention of ``tokens (N, Lq, C)`` over ``key_len``
    keys of ``head_dim`` channels a head."""
    return (
        _AVAILABLE
        and tokens.is_cuda
        and tokens.dtype in _DTYPES
        and key_len <= MAX_KEYS
        and head_dim <= MAX_HEAD_DIM
        and kernel_programs(*tokens.shape[:2]) >= MIN_PROGRAMS
    )


def few_key_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float
) -> torch.Tensor:
    """Scaled dot-product attention of ``(N, L, C)`` projections (heads side by side in ``C``) by
    the few-key kernel → ``(N, Lq, C)``; only where :func:`kernel_applies`."""
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    return few_key_attention_kernel(query, key, value, heads, scale)
