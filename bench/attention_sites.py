"""GPU time of every attention site of the full-size denoiser, per attention implementation.

One guided 24-frame denoising step is run once on synthesized full-size weights while every
``scaled_dot_product_attention`` call is recorded (query / key shapes, how often per step). Each
distinct shape is then timed alone with each implementation: PyTorch's default backend order,
cuDNN, FlashAttention-2, memory-efficient, ``explicit`` (scores, softmax, weighted sum as
plain tensor ops, compiled by inductor) and ``few-key`` (the frame modules' Triton kernel, at most
64 keys, reading its projections as the denoiser makes them: views of one joint projection). The
table says which is fastest where, and what the step's attention would cost with the best choice
at every site. ``--launches`` also times the kernel at every launch of :data:`LAUNCHES` (named
``few-key h<heads a program>q<queries a program>w<warps>``).

    python bench/attention_sites.py [--size 512] [--frames 24] [--dtype fp16] [--only default few-key]
        [--launches] [--json out.json]
"""

import argparse
import collections
import contextlib
import json
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from xnemo_core.devices import parse_dtype
from xnemo_core.models import attention_blocks
from xnemo_core.models.few_key_attention import MAX_KEYS, Launch, few_key_attention, few_key_attention_kernel
from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
from xnemo_core.testing.synthetic_weights import preset_models

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}

MOTION_TOKENS = 32
# Two heads or 8 warps a program were never the fastest at the 64² sites (bench/RESULTS.md, session 13).
LAUNCHES = [Launch(h, q, w) for h in (1, 8) for q in (32, 64, 128) for w in (2, 4)]
Site = collections.namedtuple("Site", "batch heads queries keys head_dim")


@contextmanager
def recorded_sites(counts: collections.Counter):
    """Count every ``F.scaled_dot_product_attention`` call by its shapes while inside."""
    original = F.scaled_dot_product_attention

    def recording(query, key, value, *args, **kwargs):
        counts[Site(*query.shape[:3], key.shape[2], query.shape[3])] += 1
        return original(query, key, value, *args, **kwargs)

    F.scaled_dot_product_attention = recording
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def site_kind(site: Site, frames: int, motion_tokens: int) -> str:
    if site.keys == 1:
        return "cross, one key (CLIP)"
    if site.keys == motion_tokens:
        return "cross (motion tokens)"
    if site.queries == site.keys == frames:
        return "temporal"
    if site.keys == 2 * site.queries:
        return "reference self"
    return "self"


def explicit_attention(query, key, value, scale):
    weights = torch.matmul(query * scale, key.transpose(-1, -2)).softmax(dim=-1)
    return torch.matmul(weights, value)


def implementations(heads: int, launches: list[Launch]) -> dict:
    """Fresh for every shape: ``explicit`` compiles anew (past dynamo's recompile limit of 8 shapes
    it would silently run eager)."""
    torch._dynamo.reset()
    compiled = torch.compile(explicit_attention, dynamic=False)

    def sdpa(backend):
        def attend(query, key, value, scale):
            with sdpa_kernel([backend]) if backend else contextlib.nullcontext():
                return F.scaled_dot_product_attention(query, key, value, scale=scale)

        return attend

    def few_key(launch=None):
        def attend(query, key, value, scale):  # (N, L, H*D) views of the joint projections
            if key.shape[1] > MAX_KEYS:
                raise RuntimeError(f"more than {MAX_KEYS} keys")
            if launch is None:
                return few_key_attention(query, key, value, heads, scale)
            if launch.block_q > 2 * query.shape[1] or launch.block_q * query.shape[2] // heads > 64 * 160:
                raise RuntimeError("query block over twice the queries or its tile over 64 × 160")
            return few_key_attention_kernel(query, key, value, heads, scale, *launch)

        return attend

    return {
        "default": sdpa(None),
        **{name: sdpa(b) for name, b in BACKENDS.items()},
        "explicit": compiled,
        "few-key": few_key(),
        **{f"few-key h{h}q{q}w{w}": few_key(Launch(h, q, w)) for h, q, w in launches},
    }


def joint_views(query, key, value):
    """``(N, H, L, D)`` query, key, value as ``(N, L, H*D)`` views of one projection, as the
    few-key processor makes them: one for all three (self-attention) or one for key and value."""
    flat = [t.transpose(1, 2).flatten(2) for t in (query, key, value)]
    if query.shape == key.shape:
        return torch.cat(flat, dim=-1).split(flat[0].shape[-1], dim=-1)
    return (flat[0], *torch.cat(flat[1:], dim=-1).split(flat[1].shape[-1], dim=-1))


@contextmanager
def few_key_kernel_off():
    """Frame-module attentions through ``scaled_dot_product_attention`` (so that they are recorded)."""
    original = attention_blocks.kernel_applies
    attention_blocks.kernel_applies = lambda *_: False
    try:
        yield
    finally:
        attention_blocks.kernel_applies = original


def projections(site: Site, dtype: torch.dtype):
    """Query, key, value laid out as the processors make them: ``(N, L, H*D)`` viewed ``(N, H, L, D)``."""

    def make(length):
        flat = torch.randn(site.batch, length, site.heads * site.head_dim, device="cuda", dtype=dtype)
        return flat.view(site.batch, length, site.heads, site.head_dim).transpose(1, 2)

    return make(site.queries), make(site.keys), make(site.keys)


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


def step_sites(size: int, frames: int, dtype: torch.dtype, preset="official", device="cuda") -> collections.Counter:
    models = preset_models(preset).to(dtype=dtype)
    pipeline = XNeMoPipeline(models, device=device)
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    faces = rng.integers(0, 256, (frames + 1, 224, 224, 3), dtype=np.uint8)
    condition = pipeline.encode_reference(portrait, faces[0], size, size)
    motion = pipeline.encode_motion(faces[1:])
    counts = collections.Counter()
    with recorded_sites(counts), few_key_kernel_off():
        pipeline.denoise(condition, motion, AnimationSettings(steps=1, height=size, width=size))
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--only", nargs="+", help="time only these implementations (default: all)")
    parser.add_argument("--launches", action="store_true", help="also time the few-key kernel at every launch")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    dtype = parse_dtype(args.dtype)
    start = time.perf_counter()
    counts = step_sites(args.size, args.frames, dtype)
    print(f"{sum(counts.values())} attention calls at {len(counts)} shapes ({time.perf_counter() - start:.0f} s)")
    rows, totals = [], collections.Counter()
    for site, count in sorted(counts.items(), key=lambda item: -item[0].batch * item[0].queries * item[0].keys):
        split_heads = projections(site, dtype)
        joint = joint_views(*split_heads)
        scale = site.head_dim**-0.5
        times = {}
        for name, attend in implementations(site.heads, LAUNCHES if args.launches else []).items():
            if args.only and name.split(" ")[0] not in args.only:
                continue
            inputs = joint if name.startswith("few-key") else split_heads
            try:
                times[name] = round(milliseconds(attend, *inputs, scale), 4)
            except RuntimeError as error:  # a backend that does not take this shape
                times[name] = f"n/a ({str(error).splitlines()[0][:60]})"
        timed = {name: t for name, t in times.items() if isinstance(t, float)}
        best = min(timed, key=timed.get)
        for name, t in timed.items():
            totals[name] += t * count
        totals["best"] += timed[best] * count
        rows.append(
            {
                "site": site_kind(site, args.frames, MOTION_TOKENS),
                **site._asdict(),
                "calls": count,
                "ms": times,
                "best": best,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print("attention per step, ms:", json.dumps({name: round(t, 2) for name, t in totals.items()}))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"sites": rows, "per_step_ms": totals}, file, indent=1)


if __name__ == "__main__":
    main()
