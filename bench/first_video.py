"""What a user waits for, and the GPU memory a run takes, in a fresh process: full-size synthesized
weights, the official recipe (512², 35 DDIM steps, CFG 2.5, windows 24/4, decode chunk 25).

    python bench/first_video.py videos --compile auto --videos 4 --wait-after 2 [--frames 48] [--dtype fp16]
        [--cap-gib 12] [--low-vram] [--json out.json]
    python bench/first_video.py decode [--slices 1 2 4 8]

``videos`` animates the same inputs with the same seed several times in one process, as a ComfyUI
server does prompt after prompt, and prints each video's wall time (a wait for compilation under
way, motion, reference, denoising, decode), how many denoiser calls ran compiled, its peak GPU memory and its largest difference from
the first video. The model's placement and the compile mode follow the node's rules
(:func:`xnemo_core.memory.fit`) on the GPU memory seen, which ``--cap-gib`` caps as a smaller card
would (``torch.cuda.set_per_process_memory_fraction``, and ``mem_get_info`` reporting the cap).
``--wait-after N`` waits for the background compilation after video N (its wait is printed).

``decode`` decodes one 25-frame chunk whole and in slices of each size: seconds, peak memory
beside the VAE, and the largest difference from the whole decode in 8-bit levels.
"""

import argparse
import json
import time

import torch
from pipeline_speed import inputs  # noqa: I001  (bench/ is on the path: run from the repository root with PYTHONPATH=.)

from xnemo_core import memory
from xnemo_core.builders import build_vae
from xnemo_core.config import SVD_VAE
from xnemo_core.decoding import decode_in_slices
from xnemo_core.devices import parse_dtype
from xnemo_core.models.group_norm import fuse_group_norm_silu
from xnemo_core.pipeline import AnimationSettings, XNeMoPipeline
from xnemo_core.testing.synthetic_weights import preset_models, with_synthesized_weights

GiB = 2**30


def cap_memory(gib: float) -> None:
    """Make this process see a card of ``gib`` GiB."""
    total = torch.cuda.mem_get_info()[1]
    torch.cuda.set_per_process_memory_fraction(gib * GiB / total)
    cap = int(gib * GiB)
    torch.cuda.mem_get_info = lambda device=None: (cap - torch.cuda.memory_reserved(), cap)


def timed(fn, *args):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def videos(args) -> list[dict]:
    process_start = time.perf_counter()
    if args.cap_gib:
        cap_memory(args.cap_gib)
    dtype = parse_dtype(args.dtype)
    models = preset_models("official", device="cpu").to(dtype=dtype)
    settings = AnimationSettings()
    model_bytes = memory.module_bytes(*models.modules().values())
    working = memory.working_bytes(settings, models.config, args.frames, dtype.itemsize)
    fitted = memory.fit(model_bytes, memory.usable_gpu_memory(torch.device("cuda")), working, args.low_vram, args.compile)
    offload, compile = fitted.offload, fitted.compile
    print(f"model {model_bytes / GiB:.2f} GiB, working {working / GiB:.2f} GiB: offload {offload}, compile {compile}")
    portrait, face, driving = inputs(args.frames, settings.height)
    rows, first = [], None
    for number in range(1, args.videos + 1):
        torch.cuda.reset_peak_memory_stats()
        row = {"video": number, "compile": compile, "offload": offload, "since_start_s": time.perf_counter() - process_start}
        pipeline, row["wait_s"] = timed(XNeMoPipeline, models, "cuda", offload, compile)  # auto: a compilation under way
        motion, row["motion_s"] = timed(pipeline.encode_motion, driving)
        condition, row["reference_s"] = timed(pipeline.encode_reference, portrait, face, 512, 512)
        latents, row["denoise_s"] = timed(pipeline.denoise, condition, motion, settings)
        video, row["decode_s"] = timed(pipeline.decode, latents, settings.decode_chunk)
        row["total_s"] = sum(row[key] for key in ("wait_s", "motion_s", "reference_s", "denoise_s", "decode_s"))
        row["compiled_calls"] = pipeline.denoiser.compiled_calls
        row["peak_gib"] = torch.cuda.max_memory_allocated() / GiB
        row["reserved_gib"] = torch.cuda.max_memory_reserved() / GiB
        first = video if first is None else first
        row["max_diff_to_first"] = (video - first).abs().max().item()
        rows.append(row)
        print(json.dumps(row), flush=True)
        if number == args.wait_after and pipeline.denoiser.compiled is not None:
            _, waited = timed(pipeline.denoiser.compiled.wait)
            print(json.dumps({"waited_for_compilation_s": waited, "shapes": len(pipeline.denoiser.compiled.ready)}))
    return rows


@torch.no_grad()
def decode(args) -> list[dict]:
    vae = with_synthesized_weights(build_vae(SVD_VAE), "VAE").to("cuda", torch.float16).eval()
    fuse_group_norm_silu(vae)
    latents = torch.randn(25, 4, 64, 64, generator=torch.Generator().manual_seed(0)).to("cuda", torch.float16)
    baseline = torch.cuda.memory_allocated()
    rows, whole = [], None
    for slices in [25, *args.slices]:
        run = (lambda: vae.decode(latents, num_frames=25).sample) if slices == 25 else (
            lambda: decode_in_slices(vae.decoder, latents, slices))
        run()  # warm-up (cuDNN's algorithm choice)
        torch.cuda.reset_peak_memory_stats()
        out, seconds = timed(run)
        pixels = ((out.float() / 2 + 0.5).clamp(0, 1) * 255)
        whole = pixels if whole is None else whole
        row = {"slice_frames": slices, "s": seconds, "peak_beside_vae_gib": (torch.cuda.max_memory_allocated() - baseline) / GiB,
               "max_diff_levels": (pixels - whole).abs().max().item(), "mean_diff_levels": (pixels - whole).abs().mean().item()}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del out, pixels
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("videos")
    run.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    run.add_argument("--videos", type=int, default=2)
    run.add_argument("--wait-after", type=int, default=0)
    run.add_argument("--frames", type=int, default=48)
    run.add_argument("--dtype", default="fp16")
    run.add_argument("--cap-gib", type=float, default=0)
    run.add_argument("--low-vram", action="store_true")
    run.add_argument("--json")
    chunk = commands.add_parser("decode")
    chunk.add_argument("--slices", type=int, nargs="+", default=[1, 2, 4, 8])
    chunk.add_argument("--json")
    args = parser.parse_args()
    rows = videos(args) if args.command == "videos" else decode(args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main()
