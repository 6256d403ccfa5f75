"""What FP8 matrix products could gain in the denoiser, before building them: every linear layer's
product of one guided full-size window forward (shapes recorded on the ``meta`` device), timed on
the GPU in fp16 and in FP8 (E4M3, a scale per activation row and per weight column,
``torch._scaled_mm`` with bf16 out; Hopper or newer).

For each shape: the fp16 product; the FP8 product alone (inputs already quantized: the floor);
and the whole FP8 layer (activation quantized per row, product, bias, fp16 out; compiled, so the
quantization is one fused pass: what a real FP8 layer would pay). Prints the per-forward sums, the
relative error of the FP8 product against fp16 on random inputs, and writes a JSON.

    PYTHONPATH=.:bench python bench/fp8_linear.py --out fp8.json
"""

import argparse
import collections
import json
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attention_sites import milliseconds
from frontier import meta_denoiser_call

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max


class _MatrixProducts(TorchDispatchMode):
    """Records ``(tokens, in_features, out_features, has_bias)`` of every 2-D matrix product."""

    def __init__(self):
        super().__init__()
        self.shapes = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.mm.default:
            (x, w), bias = args[:2], False
        elif func is torch.ops.aten.addmm.default:
            (x, w), bias = args[1:3], True
        else:
            return func(*args, **(kwargs or {}))
        self.shapes[x.shape[0], x.shape[1], w.shape[1], bias] += 1
        return func(*args, **(kwargs or {}))


def linear_shapes() -> collections.Counter:
    """``(tokens, in_features, out_features, has_bias)`` → calls in one guided window forward (the
    linear layers' products, joint projections included; convolutions and attention are not)."""
    with torch.device("meta"):
        unet, inputs = meta_denoiser_call(rows=2)
        with _MatrixProducts() as products:
            unet(*inputs)
    return products.shapes


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 values and the fp32 scale of each row (``x ≈ values * scale``)."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x / scale).to(torch.float8_e4m3fn), scale


def fp8_product(x8, x_scale, w8_t, w_scale):
    """The scaled FP8 product (bf16 out: what row-wise scaling gives on Hopper)."""
    return torch._scaled_mm(x8, w8_t, scale_a=x_scale, scale_b=w_scale, out_dtype=torch.bfloat16)


def quantized_fp8_linear(x, w8_t, w_scale, bias):
    """An FP8 linear layer as the denoiser would run it: fp16 in, quantize, product, bias, fp16 out."""
    x8, x_scale = quantize_rows(x)
    out = fp8_product(x8, x_scale, w8_t, w_scale)
    return (out if bias is None else out + bias).to(torch.float16)


def time_shape(tokens: int, k: int, n: int, has_bias: bool, device: str = "cuda") -> dict:
    x = torch.randn(tokens, k, device=device, dtype=torch.float16)
    w = torch.randn(n, k, device=device, dtype=torch.float16) / k**0.5
    bias = torch.randn(n, device=device, dtype=torch.float16) if has_bias else None
    w8, w_scale = quantize_rows(w)  # a scale per output feature: per column of ``w.t()``
    w8_t, w_scale_t = w8.t(), w_scale.t()
    x8, x_scale = quantize_rows(x)
    reference = nn.functional.linear(x, w, bias).float()
    error = (quantized_fp8_linear(x, w8_t, w_scale_t, bias).float() - reference).norm() / reference.norm()
    figures = {"relative_error": error.item()}
    if device == "cuda":
        compiled = torch.compile(quantized_fp8_linear, dynamic=False)
        figures["fp16_ms"] = milliseconds(nn.functional.linear, x, w, bias)
        figures["fp8_product_ms"] = milliseconds(fp8_product, x8, x_scale, w8_t, w_scale_t)
        figures["fp8_quantized_ms"] = milliseconds(compiled, x, w8_t, w_scale_t, bias)
    return figures


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="fp8-linear.json")
    parser.add_argument("--min-gflop", type=float, default=1.0, help="smaller products are left out")
    args = parser.parse_args()
    torch._dynamo.config.recompile_limit = 256  # one compiled quantized product per shape
    rows, totals = [], collections.Counter()
    for (tokens, k, n, has_bias), calls in sorted(linear_shapes().items(), key=lambda kv: -kv[0][0] * kv[0][1]):
        if k % 16 or n % 16 or 2 * tokens * k * n * calls < args.min_gflop * 1e9:
            print(f"{calls}× {tokens}×{k}→{n}: left out (FP8 needs multiples of 16; or under --min-gflop)")
            continue
        timed = time_shape(tokens, k, n, has_bias)
        rows.append({"tokens": tokens, "in": k, "out": n, "bias": has_bias, "calls": calls, **timed})
        for key in ("fp16_ms", "fp8_product_ms", "fp8_quantized_ms"):
            totals[key] += calls * timed[key]
        print(json.dumps(rows[-1]), flush=True)
    summary = {key: round(value, 2) for key, value in totals.items()}
    summary["device"] = torch.cuda.get_device_name()
    summary["torch"] = torch.__version__
    print("one guided window forward, linear layers only:", json.dumps(summary))
    Path(args.out).write_text(json.dumps({"summary": summary, "shapes": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
