"""The feed-forward's GEGLU (``h * gelu(gate)`` of one linear layer's two halves) as one Triton kernel.

diffusers' GEGLU writes the projection's ``2 × inner`` channels, then reads them back to apply the
gate: at the denoiser's 64×64 level that is a gigabyte each way for every feed-forward. Here a
program computes matching tiles of both halves in one pass over the input and writes only the
gated ``inner`` channels. The kernel is a ``torch.library.triton_op`` (``torch.compile`` traces it);
:class:`FusedGEGLU` runs it where :func:`geglu_applies` and diffusers' computation elsewhere.
"""

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from torch import nn

from .triton_support import AVAILABLE, kernels_take

if AVAILABLE:
    import triton
    import triton.language as tl

    @triton.jit
    def _geglu_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        out_ptr,
        rows,
        inner,
        channels,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
    ):
        # Grouped program order: GROUP_M row blocks share each weight tile while it is in L2.
        program = tl.program_id(0)
        row_blocks = tl.cdiv(rows, BLOCK_M)
        column_blocks = tl.cdiv(inner, BLOCK_N)
        group = program // (GROUP_M * column_blocks)
        first_row_block = group * GROUP_M
        group_rows = min(row_blocks - first_row_block, GROUP_M)
        in_group = program % (GROUP_M * column_blocks)
        row_block = first_row_block + in_group % group_rows
        column_block = in_group // group_rows

        r = (row_block * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        c = column_block * BLOCK_N + tl.arange(0, BLOCK_N)
        k = tl.arange(0, BLOCK_K)
        x_tile = x_ptr + r[:, None] * channels + k[None, :]
        h_tile = w_ptr + c[None, :].to(tl.int64) * channels + k[:, None]
        g_tile = h_tile + inner * channels
        hidden = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(0, channels, BLOCK_K):
            k_mask = (start + k) < channels
            x = tl.load(x_tile, mask=(r < rows)[:, None] & k_mask[None, :], other=0.0)
            w_mask = k_mask[:, None] & (c < inner)[None, :]
            hidden = tl.dot(x, tl.load(h_tile, mask=w_mask, other=0.0), hidden)
            gate = tl.dot(x, tl.load(g_tile, mask=w_mask, other=0.0), gate)
            x_tile += BLOCK_K
            h_tile += BLOCK_K
            g_tile += BLOCK_K
        # Each half rounded to the input's precision first, as the unfused layer does.
        dtype = out_ptr.dtype.element_ty
        hidden = (hidden + tl.load(b_ptr + c, mask=c < inner, other=0.0)[None, :]).to(dtype).to(tl.float32)
        gate = (gate + tl.load(b_ptr + inner + c, mask=c < inner, other=0.0)[None, :]).to(dtype).to(tl.float32)
        gelu = (0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476))).to(dtype).to(tl.float32)
        out = out_ptr + r[:, None] * inner + c[None, :]
        tl.store(out, (hidden * gelu).to(dtype), mask=(r < rows)[:, None] & (c < inner)[None, :])

    @torch.library.triton_op("xnemo::geglu", mutates_args=())
    def geglu_kernel(
        tokens: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        block_m: int = 128,
        block_n: int = 128,
        block_k: int = 64,
        num_warps: int = 8,
        num_stages: int = 3,
    ) -> torch.Tensor:
        """``hidden * gelu(gate)`` of ``tokens (M, C) @ weight (2I, C).T + bias (2I,)`` split in
        halves → ``(M, I)``; every tensor contiguous."""
        rows, channels = tokens.shape
        inner = weight.shape[0] // 2
        out = tokens.new_empty(rows, inner)
        grid = (triton.cdiv(rows, block_m) * triton.cdiv(inner, block_n),)
        torch.library.wrap_triton(_geglu_kernel)[grid](
            tokens,
            weight,
            bias,
            out,
            rows,
            inner,
            channels,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            GROUP_M=8,
            num_warps=num_warps,
            num_stages=num_stages,
        )
        return out


def geglu_applies(tokens: torch.Tensor, proj: nn.Linear) -> bool:
    """Whether :class:`FusedGEGLU` runs the kernel for ``tokens (..., C)`` through ``proj``."""
    return (
        kernels_take(tokens)
        and proj.weight.dtype == tokens.dtype
        and proj.bias is not None
        and tokens.shape[-1] % 8 == 0
    )


class FusedGEGLU(nn.Module):
    """diffusers' ``GEGLU`` (its ``proj`` kept, so the state-dict keys stay) by the fused kernel.

    Shapes: ``tokens (..., C)`` → ``(..., I)`` for ``proj: C → 2I``.
    """

    def __init__(self, proj: nn.Linear):
        super().__init__()
        self.proj = proj

    def forward(self, tokens: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if geglu_applies(tokens, self.proj):
            flat = tokens.reshape(-1, tokens.shape[-1]).contiguous()
            out = geglu_kernel(flat, self.proj.weight, self.proj.bias)
            return out.view(*tokens.shape[:-1], out.shape[-1])
        hidden, gate = self.proj(tokens).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


def fuse_geglu(module: nn.Module) -> None:
    """Replace every diffusers ``GEGLU`` under ``module`` by a :class:`FusedGEGLU` of the same ``proj``."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is GEGLU:
                setattr(parent, name, FusedGEGLU(child.proj))
