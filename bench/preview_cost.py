"""What live previews cost: the bundled model's denoising of the demo clip (48 frames, its recipe)
with previews off, a frame per step through a latent2rgb previewer (ComfyUI's contract, as the
progress bar shows it), and VideoHelperSuite's animated previews (every frame a step, JPEG-encoded;
the sending stubbed). Prints the median seconds of ``--repeats`` runs and, steadier on a busy
machine, the time spent inside the preview calls as a share of the run.

    PYTHONPATH=. python bench/preview_cost.py [--device cuda] [--repeats 3]
"""

import argparse
import statistics
import time

import torch
from PIL import Image

from nodes import comfy_bridge
from nodes.previews import AnimatedPreview, LivePreview
from xnemo_core import bundled, recipes
from xnemo_core.loading import load_models
from xnemo_core.motion import load_motion
from xnemo_core.pipeline import XNeMoPipeline
from xnemo_core.portrait import animation_settings
from xnemo_core.video import read_image


class Latent2RGB:
    """ComfyUI's Latent2RGBPreviewer, in short: the first latent of a batch through the factors."""

    def __init__(self, latent_rgb):
        self.latent_rgb = latent_rgb

    def decode_latent_to_preview(self, x0):
        rgb = ((self.latent_rgb.to_rgb(x0[0].float()) + 1) / 2).clamp(0, 1)
        return Image.fromarray((rgb * 255).to(torch.uint8).cpu().numpy())

    def decode_latent_to_preview_image(self, preview_format, x0):
        return (preview_format, self.decode_latent_to_preview(x0), 512)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    models = load_models(bundled.MODEL, dtype="fp32" if device.type == "cpu" else "fp16")
    pipeline = XNeMoPipeline(models, device)
    settings = animation_settings(recipes.recommended(bundled.MODEL))
    portrait = read_image(bundled.DEMO_PORTRAIT)
    condition = pipeline.encode_reference(portrait, portrait, settings.height, settings.width)
    motion = load_motion(bundled.DEMO_MOTION).tokens
    comfy_bridge.send_event = lambda name, data: None
    comfy_bridge.send_preview_frame = lambda index, jpeg: None
    previewer = Latent2RGB(models.latent_rgb)
    kinds = {
        "off": lambda: None,
        "a frame a step": lambda: LivePreview(previewer),
        "animated (VHS)": lambda: LivePreview(previewer, AnimatedPreview(previewer)),
    }
    seconds = {name: [] for name in kinds}
    inside = {name: [] for name in kinds}
    for _ in range(args.repeats):
        for name, make in kinds.items():
            spent = [0.0]
            preview = make()
            preview = preview and Timed(preview, spent, device)
            start = time.perf_counter()
            pipeline.denoise(condition, motion, settings, on_step=preview and preview.take, on_preview=preview)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
            inside[name].append(spent[0] / seconds[name][-1])
    base = statistics.median(seconds["off"])
    print(f"{len(motion)} frames, {settings.steps - settings.skipped_steps} steps, {device}")
    for name, values in seconds.items():
        median = statistics.median(values)
        share = 100 * statistics.median(inside[name])
        print(f"{name:16s} {median:7.2f} s  {100 * (median / base - 1):+5.1f} % wall   {share:5.2f} % inside previews")


class Timed:
    """A preview whose calls are timed into ``spent[0]``."""

    def __init__(self, preview, spent, device):
        self.preview, self.spent, self.device = preview, spent, device

    def __call__(self, latents):
        start = time.perf_counter()
        self.preview(latents)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.spent[0] += time.perf_counter() - start

    def take(self, *_) -> None:
        start = time.perf_counter()
        self.preview.take()
        self.spent[0] += time.perf_counter() - start


if __name__ == "__main__":
    main()
