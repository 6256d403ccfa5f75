"""The host memory the deep feature cache (``balanced`` and any reuse) takes through two refreshes of
a clip at 512² in fp16, on the CPU (the arithmetic is the same on the GPU): the features it keeps,
and the peak above its inputs (the process's resident high-water mark).

    PYTHONPATH=. python bench/deep_cache_memory.py [--frames 48]
"""

import argparse
import resource

import torch

from xnemo_core.window_prediction import DeepFeatureCache

DEEP_CHANNELS, LATENT, WINDOW, OVERLAP, ROWS = 640, 64, 24, 4, 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    frames = parser.parse_args().frames
    starts = sorted({*range(0, frames - WINDOW, WINDOW - OVERLAP), frames - WINDOW})  # at least one window
    windows = [torch.arange(start, start + WINDOW)[None] for start in starts]
    deep = torch.randn(ROWS * WINDOW, DEEP_CHANNELS, LATENT, LATENT, dtype=torch.float16)
    cache = DeepFeatureCache(frames)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        for window in windows:
            cache.add(window, deep, ROWS)
        cache.finish_refresh()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept = cache.features.numel() * cache.features.element_size()
    peak_gib = (peak - before) / 2**20  # ru_maxrss is in KiB
    print(f"{frames} frames, {len(windows)} windows: kept {kept / 2**30:.2f} GiB, peak {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
