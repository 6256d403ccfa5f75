"""Full-size modules on synthesized weights: one guided denoising forward per precision.

Prints, for fp32 / fp16 / bf16: whether every output is finite, the error of the noise prediction
against fp32, the largest activation seen anywhere in the denoiser (fp16 overflows at 65504) and
the time of one forward. No real weights needed.

    python bench/full_size_forward.py --frames 24 --size 512 [--json out.json]
"""

import argparse
import json
import time

import torch

from xnemo_core.config import XNeMoConfig
from xnemo_core.models.motion_encoder import MotionEncoder
from xnemo_core.models.reference import ReferenceUNet, capture_reference, project_reference
from xnemo_core.models.unet3d import DenoisingUNet
from xnemo_core.testing.synthetic_weights import with_synthesized_weights


def synthesized(build, label, device="meta"):
    with torch.device(device):
        module = build()
    return with_synthesized_weights(module, label).requires_grad_(False)


def largest_activation(module: torch.nn.Module) -> tuple[list, dict]:
    peak = {"value": 0.0, "where": ""}

    def record(name):
        def hook(_, __, output):
            output = output[0] if isinstance(output, tuple) else output
            if torch.is_tensor(output) and output.is_floating_point():
                value = output.detach().abs().float().max().item()
                if value > peak["value"]:
                    peak.update(value=value, where=name)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in module.named_modules() if n]
    return handles, peak


def timed(fn, repeats=3):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - start) / repeats


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json")
    args = parser.parse_args()
    config = XNeMoConfig.official()
    start = time.perf_counter()
    denoiser = synthesized(lambda: DenoisingUNet(config.unet, config.frame_modules), "denoising UNet")
    reference_unet = synthesized(lambda: ReferenceUNet(**config.unet), "reference UNet")
    encoder = synthesized(MotionEncoder, "motion encoder", device="cpu")
    print(f"synthesized full-size weights in {time.perf_counter() - start:.1f} s")

    generator = torch.Generator().manual_seed(0)
    side = args.size // 8
    ref_latents = torch.randn(1, 4, side, side, generator=generator)
    latents = torch.randn(1, 4, args.frames, side, side, generator=generator).repeat(2, 1, 1, 1, 1)
    faces = torch.rand(args.frames + 1, 3, 224, 224, generator=generator) * 2 - 1
    clip = torch.randn(1, 1, config.unet["cross_attention_dim"], generator=generator)
    results = {}
    baseline = None
    for name, dtype in [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)]:
        for module in (denoiser, reference_unet, encoder):
            torch.nn.Module.to(module, "cuda", dtype)  # diffusers' .to warns on every cast
        cast = lambda t: t.to("cuda", dtype)
        tokens = encoder(cast(faces))
        motion = torch.stack([tokens[:1].expand(args.frames, -1, -1), tokens[1:]])
        bank = project_reference(denoiser, capture_reference(reference_unet, cast(ref_latents), cast(clip)))
        guided_clip = torch.cat([torch.zeros_like(cast(clip)), cast(clip)])

        def forward(timestep=torch.tensor(981)):
            return denoiser(cast(latents), timestep, guided_clip, motion, bank, slice(1, None))

        noise, seconds = timed(forward)
        handles, peak = largest_activation(denoiser)
        forward(torch.tensor(1))
        for handle in handles:
            handle.remove()
        row = {
            "finite": bool(torch.isfinite(noise).all()) and bool(torch.isfinite(tokens).all()),
            "seconds_per_forward": seconds,
            "peak_activation": peak["value"],
            "peak_activation_at": peak["where"],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
        if baseline is None:
            baseline = noise.float()
        else:
            error = (noise.float() - baseline).abs()
            row["max_abs_error_vs_fp32"] = error.max().item()
            row["mean_abs_error_vs_fp32"] = error.mean().item()
            row["fp32_max_abs"] = baseline.abs().max().item()
        results[name] = row
        print(name, json.dumps(row))
        torch.cuda.reset_peak_memory_stats()
    print(f"device: {torch.cuda.get_device_name()}  frames {args.frames}  size {args.size}  CFG batch 2")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"device": torch.cuda.get_device_name(), "frames": args.frames, "size": args.size, **results},
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()
