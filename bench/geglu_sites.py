"""GPU time of the denoiser's feed-forward GEGLU (``h * gelu(gate)`` of one projection) per implementation.

At every feed-forward shape of the full-size denoiser (one guided 24-frame window at 512²: 48 rows
of frames, 8 transformer blocks a level): ``eager`` (diffusers: the projection, then the gate),
``compiled`` (the same through inductor: cuBLAS, then one fused gate kernel, as in the compiled
denoiser) and the fused Triton kernel (``xnemo_core/models/geglu.py``) at each launch of
:data:`LAUNCHES`. Prints ms per call and per denoiser forward, and the largest difference to eager.

    python bench/geglu_sites.py [--dtype fp16]
"""

import argparse
import json

import torch
import torch.nn.functional as F

from xnemo_core.devices import parse_dtype
from xnemo_core.models.geglu import geglu_kernel

# (tokens, channels, calls a forward): 64², 32², 16² levels (5 layers of 3 feed-forwards each), mid block.
SITES = [(48 * 4096, 320, 15), (48 * 1024, 640, 15), (48 * 256, 1280, 15), (48 * 64, 1280, 3)]
LAUNCHES = [(128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 256, 64, 8, 3)]


def unfused(tokens, weight, bias):
    hidden, gate = F.linear(tokens, weight, bias).chunk(2, dim=-1)
    return hidden * F.gelu(gate)


def milliseconds(fn, *args, repeats: int = 20) -> float:
    for _ in range(3):
        fn(*args)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn(*args)
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="fp16")
    args = parser.parse_args()
    dtype = parse_dtype(args.dtype)
    compiled = torch.compile(unfused, dynamic=False)
    totals = {}
    for rows, channels, calls in SITES:
        torch.manual_seed(0)
        tokens = torch.randn(rows, channels, device="cuda", dtype=dtype)
        weight = torch.randn(8 * channels, channels, device="cuda", dtype=dtype) / channels**0.5
        bias = torch.randn(8 * channels, device="cuda", dtype=dtype) * 0.1
        expected = unfused(tokens, weight, bias)
        implementations = {"eager": unfused, "compiled": compiled}
        for launch in LAUNCHES:
            implementations["kernel m{}n{}k{}w{}s{}".format(*launch)] = lambda t, w, b, launch=launch: geglu_kernel(
                t, w, b, *launch
            )
        row = {"tokens": rows, "channels": channels, "inner": 4 * channels, "calls": calls, "ms": {}, "max_error": {}}
        for name, fn in implementations.items():
            row["ms"][name] = round(milliseconds(fn, tokens, weight, bias), 4)
            row["max_error"][name] = (fn(tokens, weight, bias).float() - expected.float()).abs().max().item()
            totals[name] = totals.get(name, 0.0) + row["ms"][name] * calls
        print(json.dumps(row), flush=True)
    print("per forward, ms:", json.dumps({name: round(t, 2) for name, t in totals.items()}))


if __name__ == "__main__":
    main()
