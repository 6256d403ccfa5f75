"""Training throughput: data loading alone, then whole training steps (same settings).

python bench/train_speed.py [--steps 40] [--batch-size 16] [--size 64] [--workers 12] [--precision bf16]
"""

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from xnemo_core.train.data import clips
from xnemo_core.train.trainer import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-cudnn", action="store_true", help="PyTorch's own convolutions instead of cuDNN's")
    args = parser.parse_args()
    torch.backends.cudnn.enabled = not args.no_cudnn
    with tempfile.TemporaryDirectory() as output:
        config = TrainConfig(
            output,
            steps=args.steps,
            batch_size=args.batch_size,
            size=args.size,
            clip_frames=args.frames,
            num_workers=args.workers,
            mixed_precision=args.precision,
            stage=args.stage,
            log_every=1,
            checkpoint_every=10**9,
            synthetic_clips=args.steps * args.batch_size,
        )
        loader = DataLoader(clips(config), args.batch_size, num_workers=args.workers)
        start = time.perf_counter()
        batches = sum(1 for _ in loader)
        loading = (time.perf_counter() - start) / batches
        start, stamps = time.perf_counter(), []
        train(config, on_log=lambda record: stamps.append(time.perf_counter()))
        total = (time.perf_counter() - start) / args.steps
        warm = min(5, len(stamps) // 4)
        steady = (stamps[-1] - stamps[warm]) / max(1, len(stamps) - 1 - warm)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{device}: batch {args.batch_size} × {args.frames} frames at {args.size}², stage {args.stage}")
    print(f"data loading alone: {loading * 1000:.1f} ms/batch")
    print(f"training: {steady * 1000:.1f} ms/step steady ({total * 1000:.1f} ms/step with set-up and export)")
    if args.profile:
        profile_steps(TrainConfig(tempfile.mkdtemp(), size=args.size, clip_frames=args.frames, stage=args.stage))


def profile_steps(config: TrainConfig, batch_size: int = 16, steps: int = 3) -> None:
    """Operators by self time over a few forward + backward passes on one batch."""
    from torch.profiler import ProfilerActivity, profile

    from xnemo_core.train.trainer import XNeMoTraining, initial_models, select_trained

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = XNeMoTraining(select_trained(initial_models(config), config), config).to(device)
    network.to_device(device)
    frames = next(iter(DataLoader(clips(config), batch_size)))["frames"].to(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.autocast(device.type, dtype=torch.bfloat16), profile(activities=activities) as profiler:
        for _ in range(steps):
            losses = network(frames)
            (losses["diffusion"] + losses.get("reconstruction", 0)).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort, row_limit=15))


if __name__ == "__main__":
    main()
