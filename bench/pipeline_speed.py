"""Full-size pipeline speed and memory on synthesized weights (no real weights needed).

Each run animates a random 512×512 portrait with random driving faces end to end (reference
encoding, motion tokens, DDIM with guidance, temporal VAE decode) and prints seconds per frame,
achieved TFLOP/s (FLOPs from the architecture doc's FlopCounter figures) and peak GPU memory.

    python bench/pipeline_speed.py --runs fp16:official:48 fp16:official:48:compiled fp16:long:240 \
        [--steps 35] [--size 512] [--offload] [--window-batch 1] [--compare-frames 24] \
        [--official-json official.json] [--json out.json]

A run is ``dtype:schedule:frames``, optionally followed by ``:wbN`` (windows per call), ``:sN``
(N steps of the exact preset, else ``--steps``),
``:offload`` / ``:resident``, ``:cudnn`` / ``:flash`` / ``:efficient`` (that attention backend first), ``:compiled`` (the denoiser
through ``torch.compile``, with CUDA graphs when resident) and a speed preset (``:exact``, the
default, ``:balanced``, ``:fast``; ``--steps`` is the exact preset's). Each run first animates 24
frames for 4 steps of its settings (same window shapes, guided and unguided, whole and cached
steps where the preset has them): ``warmup_s`` is that, compilation included. ``--compare-frames N`` also runs fp32 on N frames and
reports each precision's video error against it, eager and compiled. ``--official-json`` reads
``bench_official.py``'s result of the same machine and prints each run's speed as a ratio to it.
Every run of the first run's length and steps also reports its video's error against the first
run's (same seed): ``--runs fp16:official:48 fp16:official:48:compiled`` checks compiled against eager.
``--profile FILE`` also profiles each run's denoising of one 24-frame window for 2 steps (after
its timed run, so compiled code is warm) and writes GPU time by kernel family and the top kernels.

Several GPUs (each run's context windows spread over them, :mod:`xnemo_core.distributed`):

    for n in 1 2 4 8; do torchrun --nproc-per-node $n bench/pipeline_speed.py --runs fp16:official:240:compiled; done
"""

import argparse
import contextlib
import copy
import json
import time

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from xnemo_core import distributed
from xnemo_core.devices import parse_dtype
from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
from xnemo_core.recipes import OFFICIAL
from xnemo_core.sampling import SPEED_PRESETS
from xnemo_core.testing.synthetic_weights import preset_models

# TFLOP per call at 512×512 (docs/architecture.md): denoiser per frame and row of a guided
# 24-frame window, reference UNet (one row), CLIP, VAE encode, motion encoder, decode per frame.
TFLOP = {"denoise_frame_row": 76.4 / 48, "reference": 1.59 / 2, "clip": 0.16, "encode": 1.12, "motion": 0.11}
TFLOP_DECODE_FRAME = 3.04


def estimated_tflop(frames: int, settings: AnimationSettings, max_window: int) -> float | None:
    """``None`` where steps skip the deep layers (their share of the FLOPs is not in the doc)."""
    if settings.deep_cache_interval > 1:
        return None
    windows = settings.windows(frames, max_window)
    rows = sum(1 + settings.guided(step, settings.steps) for step in range(settings.steps))
    denoise = rows * sum(map(len, windows)) * TFLOP["denoise_frame_row"]
    once = TFLOP["reference"] + TFLOP["clip"] + TFLOP["encode"] + TFLOP["motion"] * (frames + 1)
    return denoise + once + TFLOP_DECODE_FRAME * frames


def parse_run(spec: str, defaults) -> dict:
    dtype, schedule, frames, *options = spec.split(":")
    run = {"dtype": dtype, "schedule": schedule, "frames": int(frames)}
    run["window_batch"] = defaults.window_batch
    run["offload"] = defaults.offload
    run["compiled"] = False
    run["attention"] = "default"
    run["preset"] = "exact"
    run["steps"] = defaults.steps
    for option in options:
        if option.startswith("wb"):
            run["window_batch"] = int(option[2:])
        elif option.startswith("s") and option[1:].isdigit():
            run["steps"] = int(option[1:])
        elif option in ("offload", "resident"):
            run["offload"] = option == "offload"
        elif option == "compiled":
            run["compiled"] = True
        elif option in ATTENTION_ORDERS:
            run["attention"] = option
        elif option in SPEED_PRESETS:
            run["preset"] = option
        else:
            raise SystemExit(f"unknown run option {option!r} in {spec!r}")
    return run


def inputs(frames: int, size: int):
    rng = np.random.default_rng(0)
    portrait = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    faces = rng.integers(0, 256, (frames + 1, 224, 224, 3), dtype=np.uint8)
    return portrait, faces[0], faces[1:]


class Phases:
    """Seconds and peak GPU memory (GiB) of each phase."""

    def __init__(self):
        self.figures = {}

    def __call__(self, name, fn, *args):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn(*args)
        torch.cuda.synchronize()
        self.figures[f"{name}_s"] = time.perf_counter() - start
        self.figures[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out


def animate_timed(pipeline: XNeMoPipeline, frames: int, settings: AnimationSettings) -> tuple[torch.Tensor, dict]:
    portrait, face, driving = inputs(frames, settings.height)
    phase = Phases()
    motion = phase("motion", pipeline.encode_motion, driving)
    condition = phase("reference", pipeline.encode_reference, portrait, face, settings.height, settings.width)
    latents = phase("denoise", pipeline.denoise, condition, motion, settings)
    video = phase("decode", pipeline.decode, latents, settings.decode_chunk)
    return video, phase.figures


ATTENTION_ORDERS = {
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION],
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION],
}
"""Scaled-dot-product attention backends tried first (``:cudnn``, ``:flash``, ``:efficient``); else PyTorch's order."""


def attention_backends(choice: str):
    if choice == "default":
        return contextlib.nullcontext()
    return sdpa_kernel(ATTENTION_ORDERS[choice], set_priority=True)


# Kernel families by name, first match wins: what a profile says the time goes to.
KERNEL_FAMILIES = [
    ("attention", ("flash", "fmha", "attention", "cudnn_generated_fort_native_sdpa")),
    ("convolution", ("conv", "implicit_gemm", "winograd", "dgrad", "wgrad", "fprop")),
    ("gemm", ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "triton_tem_fused_mm", "triton_tem_fused_addmm")),
    ("fused element-wise / norm (triton)", ("triton",)),
    ("norm", ("norm",)),
    ("copy / layout", ("copy", "cat", "transpose", "memcpy", "memset")),
]


def kernel_family(name: str) -> str:
    lowered = name.lower()
    return next(
        (family for family, keys in KERNEL_FAMILIES if any(key in lowered for key in keys)), "other element-wise"
    )


def profile_window(pipeline: XNeMoPipeline, settings: AnimationSettings, run: dict) -> str:
    """GPU time of denoising one 24-frame window for 2 steps, by kernel family, and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    portrait, face, driving = inputs(24, settings.height)
    motion = pipeline.encode_motion(driving)
    condition = pipeline.encode_reference(portrait, face, settings.height, settings.width)
    short = AnimationSettings(**{**settings.__dict__, "steps": 2})
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        pipeline.denoise(condition, motion, short)
        torch.cuda.synchronize()
    kernels = [event for event in profiler.key_averages() if event.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(event.self_device_time_total for event in kernels) or 1
    families: dict[str, float] = {}
    for event in kernels:
        family = kernel_family(event.key)
        families[family] = families.get(family, 0) + event.self_device_time_total
    lines = [f"run {json.dumps(run)}: GPU time {total / 1e3:.1f} ms for one window, 2 steps"]
    lines += [f"  {share / total:6.1%}  {family}" for family, share in sorted(families.items(), key=lambda kv: -kv[1])]
    lines.append("  top kernels:")
    for event in sorted(kernels, key=lambda e: -e.self_device_time_total)[:25]:
        lines.append(f"  {event.self_device_time_total / total:6.1%} {event.count:5d}×  {event.key[:110]}")
    return "\n".join(lines)


def run_one(
    master, run: dict, args, official: dict | None, first: tuple[dict, torch.Tensor] | None
) -> tuple[dict, torch.Tensor]:
    dtype = parse_dtype(run["dtype"])
    models = copy.deepcopy(master).to(dtype=dtype)
    settings = AnimationSettings(
        steps=run["steps"],
        height=args.size,
        width=args.size,
        schedule=run["schedule"],
        window_batch=run["window_batch"],
        decode_chunk=args.decode_chunk,
    ).with_preset(run["preset"])
    compile = "on" if run["compiled"] else "off"
    pipeline = XNeMoPipeline(models, device="cuda", offload=run["offload"], compile=compile)
    warmup = AnimationSettings(**{**settings.__dict__, "steps": 4})
    with attention_backends(run["attention"]):
        start = time.perf_counter()
        animate_timed(pipeline, min(run["frames"], 24), warmup)
        warmup_s = time.perf_counter() - start
        torch.cuda.empty_cache()
        video, phases = animate_timed(pipeline, run["frames"], settings)
        if args.profile:
            with open(args.profile, "a") as file:
                print(profile_window(pipeline, settings, run), file=file)
    total = sum(v for k, v in phases.items() if k.endswith("_s"))
    tflop = estimated_tflop(run["frames"], settings, master.config.max_window)
    result = {
        **run,
        "steps": settings.steps,
        "size": args.size,
        **{k: round(v, 2) for k, v in phases.items()},
        "warmup_s": round(warmup_s, 1),
        "total_s": round(total, 2),
        "s_per_frame": round(total / run["frames"], 4),
        "tflop": tflop and round(tflop),
        "tflop_per_s": tflop and round(tflop / total),
        "peak_gib": round(max(v for k, v in phases.items() if k.endswith("_peak_gib")), 2),
        "finite": bool(torch.isfinite(video).all()),
        "gpus": ranks.world_size if (ranks := distributed.current()) else 1,
    }
    if official is not None:
        result["x_official"] = round(official["s_per_frame"] / result["s_per_frame"], 2)
    if first is not None and first[0]["steps"] == result["steps"] and first[1].shape == video.shape:
        error = (video - first[1]).abs()
        result["video_max_abs_vs_first"] = round(error.max().item(), 4)
        result["video_mean_abs_vs_first"] = round(error.mean().item(), 5)
    report(json.dumps(result))
    del pipeline, models
    torch.cuda.empty_cache()
    return result, video


def compare_precisions(master, frames: int, args) -> list[dict]:
    """Video error of fp16 / bf16, eager and compiled, against eager fp32: same seed, official
    schedule, 10 steps, resident (CUDA graphs when compiled)."""
    settings = AnimationSettings(steps=10, height=args.size, width=args.size)
    videos = {}
    for name, compile in (("fp32", "off"), ("fp16", "off"), ("fp16", "on"), ("bf16", "off"), ("bf16", "on")):
        models = copy.deepcopy(master).to(dtype=parse_dtype(name))
        pipeline = XNeMoPipeline(models, device="cuda", compile=compile)
        videos[name, compile] = animate_timed(pipeline, frames, settings)[0]
        del pipeline, models
        torch.cuda.empty_cache()
    results = []
    for name, compile in videos:
        if name == "fp32":
            continue
        error = (videos[name, compile] - videos["fp32", "off"]).abs()
        results.append(
            {
                "compare": name,
                "compiled": compile == "on",
                "vs": "fp32 eager",
                "frames": frames,
                "steps": 10,
                "video_max_abs": round(error.max().item(), 4),
                "video_mean_abs": round(error.mean().item(), 5),
            }
        )
        report(json.dumps(results[-1]))
    return results


def report(line: str) -> None:
    """Print on the one process, or on rank 0 of several."""
    if (ranks := distributed.current()) is None or ranks.rank == 0:
        print(line, flush=True)


def main():
    with distributed.joined(torch.device("cuda")):
        bench()


def bench():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["fp16:official:48"])
    parser.add_argument("--steps", type=int, default=OFFICIAL["steps"], help="the exact preset's steps")
    parser.add_argument("--size", type=int, default=OFFICIAL["size"])
    parser.add_argument("--window-batch", type=int, default=1)
    parser.add_argument("--offload", action="store_true", help="default for runs without :offload / :resident")
    parser.add_argument("--compare-frames", type=int, default=0)
    parser.add_argument("--json", help="also write every result here")
    parser.add_argument("--official-json", help="bench_official.py's JSON line of this machine, for ratios")
    parser.add_argument(
        "--decode-chunk", type=int, default=OFFICIAL["decode_chunk"], help="the official value defines the output"
    )
    parser.add_argument("--profile", help="append each run's kernel profile of one window here")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="measured slower here: new shapes re-tune")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    runs = [parse_run(spec, args) for spec in args.runs]
    start = time.perf_counter()
    master = preset_models("official")
    report(f"synthesized full-size models in {time.perf_counter() - start:.0f} s on {torch.cuda.get_device_name()}")
    official = json.loads(open(args.official_json).read().strip().splitlines()[-1]) if args.official_json else None
    results = compare_precisions(master, args.compare_frames, args) if args.compare_frames else []
    first = None
    for run in runs:
        result, video = run_one(master, run, args, official, first)
        results.append(result)
        first = first or (result, video)
    if args.json and (distributed.current() is None or distributed.current().rank == 0):
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
