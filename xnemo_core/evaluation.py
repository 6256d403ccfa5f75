"""Cross-reenactment on held-out synthetic identities and motions, against exact ground truth.

Identity ``i`` of the held-out set is animated with the motion of identity ``j``; the truth is
identity ``i`` rendered with that motion. Reported per method:

- PSNR, SSIM (and LPIPS when the ``lpips`` package is installed) against the truth;
- motion error: mean absolute error of the motion parameters a regressor reads off each frame;
- identity leakage: ``d_ref / (d_ref + d_drv)`` of the identity parameters the regressor reads,
  ``d`` being the distance to the reference's and to the driver's true parameters (0: the
  reference's identity, 0.5: half way, 1: the driver's);
- for models, the identity share of the motion encoding (:func:`motion_identity_share`): where
  leakage comes from; and the denoiser's reliance on the motion (:func:`motion_reliance`): whether
  the driving motion reaches the output at all.

The regressor (a small CNN) is trained on the synthetic world itself, on fresh random draws,
degraded (blur, noise) so that it reads motion rather than sharpness.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .loading import load_models
from .models.reference import project_reference
from .pipeline import AnimationSettings, XNeMoPipeline
from .sampling import OFFICIAL_SCHEDULER
from .synthetic import MOTION_FIELDS, random_identity, render, render_clip
from .train.data import SyntheticFaces, to_tensor

IDENTITY_SIZE = len(random_identity(np.random.default_rng(0)).vector())


class WorldRegressor(nn.Module):
    """Frame ``(N, 3, S, S)`` in [-1, 1] → (motion ``(N, 10)``, identity vector ``(N, IDENTITY_SIZE)``).

    The last feature map is read as a 4×4 grid rather than pooled to one vector: gaze, brows and
    head pose are positions, which a global average would blur away.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        layers, width = [], 3
        for out in (channels, channels, 2 * channels, 2 * channels, 4 * channels):
            layers += [_conv(width, out, stride=2), _conv(out, out, stride=1)]
            width = out
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.motion = nn.Linear(16 * width, len(MOTION_FIELDS))
        self.identity = nn.Linear(16 * width, IDENTITY_SIZE)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(frames)
        return self.motion(features), self.identity(features)


def _conv(width: int, out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, out, 3, stride=stride, padding=1), nn.BatchNorm2d(out), nn.ReLU())


def degrade(frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(N, 3, S, S)`` frames with what a generated frame may suffer that is not motion: detail lost
    (each one scaled down by a random factor up to 3 and back up) and noise. A regressor trained on
    these reads the motion of a blurry frame instead of mistaking the blur for motion."""
    size = frames.shape[-1]
    factors = 1 + 2 * torch.rand(len(frames), generator=generator)
    blurred = torch.cat(
        [
            F.interpolate(
                F.interpolate(frame[None], size=round(size / float(f)), mode="area"), size=size, mode="bilinear"
            )
            for frame, f in zip(frames, factors)
        ]
    )
    strength = 0.04 * torch.rand(len(frames), 1, 1, 1, generator=generator)
    noise = torch.randn(frames.shape, generator=generator) * strength
    return (blurred + noise.to(frames.device)).clamp(-1, 1)


def train_regressor(
    size: int, steps: int = 4000, batch: int = 128, seed: int = 1234, device="cpu", num_workers: int = 0
) -> WorldRegressor:
    """Fit the regressor on degraded random frames from a seed no dataset uses by default."""
    torch.manual_seed(seed)
    frames = SyntheticFaces(steps * batch, frames=1, size=size, seed=seed)
    loader = DataLoader(frames, batch_size=batch, num_workers=num_workers)
    model = WorldRegressor().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    for item in tqdm(loader, desc="training the metrics' regressor (once; cached)", unit="step"):
        predicted_motion, predicted_identity = model(degrade(item["frames"][:, 0].to(device)))
        motion, identity = item["motion"][:, 0].to(device), item["identity"].to(device)
        loss = F.mse_loss(predicted_motion, motion) + F.mse_loss(predicted_identity, identity)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def load_or_train_regressor(path: Path, size: int, device="cpu", num_workers: int = 0, **budget) -> WorldRegressor:
    """The regressor cached at ``path``, or one trained there (``budget``: :func:`train_regressor`'s
    ``steps`` and ``batch``)."""
    if path.is_file():
        model = WorldRegressor()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except RuntimeError as error:
            raise ValueError(
                f"{path} is not a regressor of this version ({str(error).splitlines()[0]}); "
                "delete it and the evaluation trains a new one there"
            ) from None
        return model.to(device).eval()
    model = train_regressor(size, device=device, num_workers=num_workers, **budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.cpu() for key, value in model.state_dict().items()}, path)
    return model


@dataclass
class CrossPair:
    reference: np.ndarray
    """``(S, S, 3)`` uint8: identity i in its first pose."""
    driving: np.ndarray
    """``(F, S, S, 3)`` uint8: identity j performing motion j."""
    truth: np.ndarray
    """``(F, S, S, 3)`` uint8: identity i performing motion j."""
    motion: np.ndarray
    reference_identity: np.ndarray
    driver_identity: np.ndarray


def cross_pairs(count: int, frames: int, size: int, seed: int = 10_000) -> list[CrossPair]:
    """``count`` held-out (i, j = i + 1) pairs from a seed no training run uses by default."""
    world = SyntheticFaces(count + 1, frames, size, seed=seed)
    pairs = []
    for i in range(count):
        a, b, motion = world.identity(i), world.identity(i + 1), world.motion(i + 1)
        pairs.append(
            CrossPair(
                reference=render(a, world.motion(i)[0], size),
                driving=render_clip(b, motion, size),
                truth=render_clip(a, motion, size),
                motion=motion,
                reference_identity=a.vector(),
                driver_identity=b.vector(),
            )
        )
    return pairs


def psnr(output: torch.Tensor, truth: torch.Tensor) -> float:
    """Frames in [0, 1]."""
    mse = F.mse_loss(output, truth, reduction="none").mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def ssim(output: torch.Tensor, truth: torch.Tensor, window: int = 7, sigma: float = 1.5) -> float:
    """Mean SSIM of ``(N, 3, H, W)`` frames in [0, 1] (Gaussian window, per channel)."""
    coords = torch.arange(window, dtype=torch.float32) - window // 2
    kernel_1d = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = (kernel_1d[:, None] * kernel_1d[None]) / kernel_1d.sum() ** 2
    kernel = kernel.expand(3, 1, window, window)

    def blur(x):
        return F.conv2d(x, kernel, groups=3)

    mu_x, mu_y = blur(output), blur(truth)
    var_x, var_y = blur(output * output) - mu_x**2, blur(truth * truth) - mu_y**2
    covariance = blur(output * truth) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    score = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(score.mean())


def _lpips():
    try:
        import lpips
    except ImportError:
        return None
    return lpips.LPIPS(net="alex", verbose=False)


def score(frames: np.ndarray, pair: CrossPair, regressor: WorldRegressor, lpips_model=None) -> dict[str, float]:
    """Metrics of one method's ``(F, S, S, 3)`` uint8 output on ``pair``."""
    output, truth = _unit(frames), _unit(pair.truth)
    with torch.no_grad():
        device = next(regressor.parameters()).device
        motion, identity = (t.cpu().numpy() for t in regressor(to_tensor(frames).to(device)))
    to_reference = np.linalg.norm(identity - pair.reference_identity, axis=1)
    to_driver = np.linalg.norm(identity - pair.driver_identity, axis=1)
    result = {
        "psnr": psnr(output, truth),
        "ssim": ssim(output, truth),
        "motion_error": float(np.abs(motion - pair.motion).mean()),
        "identity_leakage": float((to_reference / (to_reference + to_driver + 1e-8)).mean()),
    }
    if lpips_model is not None:
        with torch.no_grad():
            result["lpips"] = float(lpips_model(output * 2 - 1, truth * 2 - 1).mean())
    return result


def load_pipeline(model_path: str | Path, device: str) -> XNeMoPipeline:
    """A model to evaluate, in fp32; load it once for :func:`model_method` and :func:`vae_roundtrip_method`."""
    return XNeMoPipeline(load_models(model_path, dtype="fp32"), device)


def model_method(pipeline: XNeMoPipeline, steps: int, size: int, denoise: float = 1.0, preset: str = "exact"):
    """Animate a pair's reference with its driving frames, sampling with a speed preset (``steps``
    is the ``exact`` preset's)."""
    settings = AnimationSettings(steps=steps, height=size, width=size, denoise=denoise).with_preset(preset)
    return settings_method(pipeline, settings)


def settings_method(pipeline: XNeMoPipeline, settings: AnimationSettings):
    """Animate a pair's reference with its driving frames (crops are the frames: faces are aligned)
    with ``settings``."""

    def animate(pair: CrossPair) -> np.ndarray:
        motion = pipeline.encode_motion(pair.driving)
        video = pipeline.animate(pair.reference, pair.reference, motion, settings).video.numpy()
        return (video * 255).round().astype(np.uint8)

    return animate


def vae_roundtrip_method(pipeline: XNeMoPipeline):
    """The truth encoded and decoded by a model's VAE: the best a model with that VAE can score."""

    def roundtrip(pair: CrossPair) -> np.ndarray:
        latents = pipeline.encode_latents(to_tensor(pair.truth))
        video = pipeline.decode(rearrange(latents, "f c h w -> 1 c f h w"), chunk=len(latents)).numpy()
        return (video * 255).round().astype(np.uint8)

    return roundtrip


@torch.no_grad()
def motion_identity_share(pipeline: XNeMoPipeline, pairs: list[CrossPair]) -> float:
    """How much of what the motion encoder passes on is identity: 0 none, 1 all.

    Per frame, ``d_id`` is the distance between the encodings of the truth and of the driving
    frame (the same motion, another person), ``d_motion`` between the truth and the reference (the
    same person, another motion); the share is the mean of ``d_id / (d_id + d_motion)``. An
    identity-agnostic motion latent, X-NeMo's aim, sits near 0.
    """
    shares = []
    for pair in pairs:
        truth, driving, reference = (
            pipeline.encode_motion(frames).flatten(1) for frames in (pair.truth, pair.driving, pair.reference[None])
        )
        to_driver, to_reference = (truth - driving).norm(dim=1), (truth - reference).norm(dim=1)
        shares.append(float((to_driver / (to_driver + to_reference + 1e-8)).mean()))
    return float(np.mean(shares))


@torch.no_grad()
def motion_reliance(
    pipeline: XNeMoPipeline, pairs: list[CrossPair], timesteps: tuple[int, ...] = (200, 400, 600, 800)
) -> dict[str, float]:
    """How much the denoiser's noise prediction on the truth frames gains from being told the motion.

    Measured as the relative rise of its error when the motion encoding is replaced by the
    reference's own (the unconditional motion of guidance): ``self``, told by the truth frames
    themselves; ``cross``, told by the driving frames (the same motion performed by another
    person), as in use. 0: the motion is ignored; below 0: the encoding misleads (a driver's face
    shape, say). A model that follows the driver gains most at high noise, where the pose cannot be
    read off the latents.
    """
    unet = pipeline.models.denoising_unet
    scheduler = DDIMScheduler(**OFFICIAL_SCHEDULER)
    generator = torch.Generator().manual_seed(0)
    errors = {"truth": 0.0, "driver": 0.0, "reference": 0.0}
    for pair in pairs:
        size = pair.reference.shape[0]
        condition = pipeline.encode_reference(pair.reference, pair.reference, size, size)
        truth = rearrange(pipeline.encode_latents(to_tensor(pair.truth)).float(), "f c h w -> 1 c f h w")
        reference = project_reference(unet, condition.tokens)
        reference_motion = condition.unconditional_motion.cpu()
        motions = {
            "truth": pipeline.encode_motion(pair.truth),
            "driver": pipeline.encode_motion(pair.driving),
            "reference": reference_motion.expand(len(pair.truth), *reference_motion.shape[1:]),
        }
        for timestep in timesteps:
            noise = torch.randn(truth.shape, generator=generator).to(truth.device)
            noisy = scheduler.add_noise(truth, noise, torch.tensor([timestep]))
            for name, motion in motions.items():
                prediction = unet(
                    noisy.to(pipeline.dtype),
                    timestep,
                    condition.clip_embeds.to(pipeline.dtype),
                    motion[None].to(truth.device, pipeline.dtype),
                    reference,
                )
                errors[name] += F.mse_loss(prediction.float(), noise).item()
    return {"self": errors["reference"] / errors["truth"] - 1, "cross": errors["reference"] / errors["driver"] - 1}


def motion_measures(pipeline: XNeMoPipeline, pairs: list[CrossPair]) -> dict[str, float]:
    """A model's identity share of the motion encoding and its reliance on the motion, by name."""
    reliance = motion_reliance(pipeline, pairs)
    return {
        "motion_identity_share": motion_identity_share(pipeline, pairs),
        "motion_reliance_self": reliance["self"],
        "motion_reliance_cross": reliance["cross"],
    }


def repeat_reference(pair: CrossPair) -> np.ndarray:
    return np.repeat(pair.reference[None], len(pair.truth), axis=0)


def evaluate(
    methods: dict, pairs: list[CrossPair], regressor: WorldRegressor, exact_of: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Mean metrics per method name. ``exact_of`` maps a method to the one whose outputs it
    approximates (a speed preset to ``exact``): its row gains ``psnr_vs_exact``, the PSNR of its
    frames against those outputs."""
    lpips_model = _lpips()
    with tqdm(total=len(methods) * len(pairs), desc="animating the held-out pairs", unit="video") as bar:
        outputs = {name: [_counted(bar, method, pair) for pair in pairs] for name, method in methods.items()}
    table = {}
    for name, videos in outputs.items():
        scores = [score(frames, pair, regressor, lpips_model) for frames, pair in zip(videos, pairs)]
        table[name] = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
        if name in (exact_of or {}):
            exact = outputs[exact_of[name]]
            table[name]["psnr_vs_exact"] = float(np.mean([psnr(*map(_unit, pair)) for pair in zip(videos, exact)]))
    return table


def _counted(bar: tqdm, method, pair: CrossPair) -> np.ndarray:
    frames = method(pair)
    bar.update()
    return frames


def _unit(frames: np.ndarray) -> torch.Tensor:
    """``(F, S, S, 3)`` uint8 → ``(F, 3, S, S)`` float in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A Markdown table; a method without some column (a baseline has no encoder) shows "–" there."""
    columns = list(dict.fromkeys(column for row in table.values() for column in row))
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" if c in row else "–" for c in columns) + " |")
    return "\n".join(lines)


def write_json(table: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=2) + "\n")
    return path
