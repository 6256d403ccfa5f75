"""Flicker of frame-by-frame decoding, priced on the bundled model (whose VAE is an SVD-style
temporal decoder, as the official one): its latents of the demo clip decoded whole chunks at a time
(the temporal decoder mixing neighbouring frames, as the pipeline does) and one frame at a time
(what a per-frame decoder such as TAESD does). Prints the mean frame-to-frame change and the jitter
(mean |f[t+1] - 2 f[t] + f[t-1]|, which smooth motion keeps low and flicker raises), in 8-bit levels.

    PYTHONPATH=. python bench/decoder_flicker.py
"""

import torch

from xnemo_core import bundled, recipes
from xnemo_core.loading import load_models
from xnemo_core.motion import load_motion
from xnemo_core.pipeline import XNeMoPipeline
from xnemo_core.portrait import animation_settings
from xnemo_core.video import read_image


def temporal_figures(frames: torch.Tensor) -> tuple[float, float]:
    levels = frames * 255
    change = (levels[1:] - levels[:-1]).abs().mean()
    jitter = (levels[2:] - 2 * levels[1:-1] + levels[:-2]).abs().mean()
    return float(change), float(jitter)


def main() -> None:
    models = load_models(bundled.MODEL, dtype="fp32")
    pipeline = XNeMoPipeline(models)
    settings = animation_settings(recipes.recommended(bundled.MODEL))
    portrait = read_image(bundled.DEMO_PORTRAIT)
    condition = pipeline.encode_reference(portrait, portrait, settings.height, settings.width)
    latents = pipeline.denoise(condition, load_motion(bundled.DEMO_MOTION).tokens, settings)
    whole = pipeline.decode(latents, chunk=settings.decode_chunk)
    per_frame = pipeline.decode(latents, chunk=1)
    print(f"{latents.shape[2]} frames at {settings.height}², decode chunk {settings.decode_chunk} against 1")
    for name, frames in (("temporal decoder", whole), ("frame by frame", per_frame)):
        change, jitter = temporal_figures(frames)
        print(f"{name:17s} change {change:6.2f}  jitter {jitter:6.2f}")
    print(f"frame by frame against temporal: mean |difference| {float((whole - per_frame).abs().mean() * 255):.2f} levels")


if __name__ == "__main__":
    main()
