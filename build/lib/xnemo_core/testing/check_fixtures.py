"""Compare our modules with golden outputs of the official code on synthesized weights.

``python -m xnemo_core.testing.check_fixtures DIR --tag TAG`` rebuilds the weights by the fixture rule,
runs every ``TAG_*`` fixture present in DIR, prints the error of each tensor and exits non-zero if
any is outside the tolerance of the fixtures README. Every setting comes from ``DIR/TAG.json``.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import load_file

from ..config import VAE_SCALING_FACTOR, XNeMoConfig
from ..models import XNeMoModels
from ..models.motion_encoder import MotionEncoder
from ..models.reference import ReferenceUNet, capture_reference, project_reference
from ..models.unet3d import DenoisingUNet
from ..pipeline import AnimationSettings, XNeMoPipeline
from ..windows import official_windows
from .synthetic_weights import synthesized_models, with_synthesized_weights


@dataclass
class Comparison:
    fixture: str
    tensor: str
    max_abs: float
    reference_max: float
    limit: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.limit

    def __str__(self) -> str:
        relative = self.max_abs / max(self.reference_max, 1e-30)
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"{verdict:4} {self.fixture:22} {self.tensor:38} max abs {self.max_abs:.3e}  "
            f"relative {relative:.3e}  limit {self.limit:.3e}"
        )


def compare_relative(fixture: str, tensor: str, ours: torch.Tensor, golden: torch.Tensor, rel: float):
    """Max abs error against ``rel`` × the golden tensor's max abs value."""
    if ours.shape != golden.shape:
        raise ValueError(f"{fixture}/{tensor}: shape {tuple(ours.shape)} != golden {tuple(golden.shape)}")
    reference_max = golden.abs().max().item()
    error = (ours.float() - golden.float()).abs().max().item()
    return Comparison(fixture, tensor, error, reference_max, rel * reference_max)


def compare_absolute(fixture: str, tensor: str, error: float, golden: torch.Tensor, limit: float):
    """An error already reduced (e.g. a mean) against an absolute limit."""
    return Comparison(fixture, tensor, error, golden.abs().max().item(), limit)


def fixture_config(settings: dict) -> XNeMoConfig:
    """The UNet sizes of a fixture set (``TAG.json``)."""
    return XNeMoConfig(unet=settings["small_unet_config"], frame_modules=settings["unet_additional_kwargs"])


def small_unets(settings: dict) -> tuple[ReferenceUNet, DenoisingUNet]:
    config = fixture_config(settings)
    reference = with_synthesized_weights(ReferenceUNet(**config.unet), "reference UNet")
    denoiser = with_synthesized_weights(DenoisingUNet(config.unet, config.frame_modules), "denoising UNet")
    return reference, denoiser


@torch.no_grad()
def check_motion_encoder(golden: dict, settings: dict, path: Path) -> list[Comparison]:
    name = path.stem
    encoder = with_synthesized_weights(MotionEncoder(), "motion encoder")
    return [
        compare_relative(name, "tokens", encoder(golden["input"], golden["bbox_param"]), golden["tokens"], 1e-5),
        compare_relative(
            name, "face_motion_512", encoder.face_motion(golden["input"]), golden["face_motion_512"], 1e-5
        ),
        compare_relative(name, "buffer.pe", encoder.pe, golden["buffer.pe"], 1e-5),
    ]


@torch.no_grad()
def check_unet_step(golden: dict, settings: dict, path: Path) -> list[Comparison]:
    name = path.stem
    reference_unet, denoiser = small_unets(settings)
    clip = golden["clip_embeds"]
    tokens = capture_reference(reference_unet, golden["ref_latents"], clip)
    guided_clip = torch.cat([torch.zeros_like(clip), clip])
    latents, timestep, motion = golden["noisy_latents"], golden["timestep"], golden["motion_tokens"]
    uncond_rows = latents.shape[0] // 2
    noise = denoiser(
        latents, timestep, guided_clip, motion, project_reference(denoiser, tokens), slice(uncond_rows, None)
    )
    plain = denoiser(latents, timestep, guided_clip, torch.zeros_like(motion))
    return [
        compare_relative(name, "noise_pred", noise, golden["noise_pred"], 1e-5),
        compare_relative(
            name,
            "noise_pred_no_reference_zero_motion",
            plain,
            golden["noise_pred_no_reference_zero_motion"],
            1e-5,
        ),
    ]


def pipeline_models(settings: dict) -> XNeMoModels:
    """Every part at the fixture's sizes, weights by the rule (the tiny CLIP / VAE files were made so too)."""
    config = fixture_config(settings)
    recipe = settings["pipeline"]
    return synthesized_models(config, recipe["clip_config"], recipe["vae_config"])


@torch.no_grad()
def check_pipeline(golden: dict, settings: dict, path: Path) -> list[Comparison]:
    name, recipe = path.stem, settings["pipeline"]
    pipeline = XNeMoPipeline(pipeline_models(settings))
    animation = AnimationSettings(
        steps=recipe["steps"],
        guidance_scale=recipe["guidance_scale"],
        height=recipe["size"],
        width=recipe["size"],
        context_frames=recipe["context_frames"],
        context_overlap=recipe["context_overlap"],
    )
    condition = pipeline.encode_reference(
        golden["ref_image_u8"].numpy(), golden["ref_face_u8"].numpy(), animation.height, animation.width
    )
    motion = pipeline.encode_motion(golden["driving_u8"].numpy())
    offsets = [settings["offset"]] * animation.steps
    latents = pipeline.denoise(condition, motion, animation, noise=golden["noise"], offsets=offsets)
    video = rearrange(pipeline.decode(latents, animation.decode_chunk), "f h w c -> 1 c f h w")
    first_window = official_windows(len(motion), recipe["context_frames"], recipe["context_overlap"], offsets[0])[0]
    final = rearrange(latents[0] / VAE_SCALING_FACTOR, "c f h w -> f c h w")
    gold_final, gold_video = golden["intermediate.final_latents_scaled"], golden["video"]
    return [
        compare_relative(
            name, "clip_image_embeds", condition.clip_embeds[:, 0], golden["intermediate.clip_image_embeds"], 1e-5
        ),
        compare_relative(
            name,
            "motion_tokens_uncond",
            condition.unconditional_motion,
            golden["intermediate.motion_tokens_uncond"],
            1e-5,
        ),
        compare_relative(
            name,
            "motion_tokens_first_window",
            motion[first_window][None],
            golden["intermediate.motion_tokens_first_window"],
            1e-5,
        ),
        compare_absolute(
            name, "final_latents_scaled (mean abs)", (final - gold_final).abs().mean().item(), gold_final, 0.05
        ),
        compare_absolute(name, "video (max abs)", (video - gold_video).abs().max().item(), gold_video, 1e-2),
        compare_absolute(name, "video (mean abs)", (video - gold_video).abs().mean().item(), gold_video, 1e-3),
    ]


CHECKS = {"motion_encoder": check_motion_encoder, "unet_step": check_unet_step, "pipeline": check_pipeline}


def run_fixtures(directory: Path, tag: str) -> list[Comparison]:
    settings_file = directory / f"{tag}.json"
    if not settings_file.is_file():
        raise FileNotFoundError(f"no fixture settings {settings_file}")
    settings = json.loads(settings_file.read_text())
    results = []
    found = False
    for kind, check in CHECKS.items():
        path = directory / f"{tag}_{kind}.safetensors"
        if path.is_file():
            found = True
            results += check(load_file(str(path)), settings, path)
    if not found:
        raise FileNotFoundError(f"no {tag}_<fixture>.safetensors files in {directory}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xnemo_core.testing.check_fixtures", description=__doc__.splitlines()[0]
    )
    parser.add_argument("directory", type=Path, help="folder with TAG.json and TAG_*.safetensors")
    parser.add_argument("--tag", default="golden", help="fixture set name (default: golden)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        results = run_fixtures(args.directory, args.tag)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(result)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
