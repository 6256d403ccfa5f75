"""Motion latents as data: per-frame motion tokens that can be blended, edited, saved and shared.

Blending works on the tokens alone (``(F, 32, 16)``); it never runs a network. Every operation is
affine with weights summing to one, so the motion encoder's fixed position table, which every
token row carries, is preserved.
"""

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .face import gaussian_smooth
from .files import inside, replacing
from .video import check_fps

LENGTH_MODES = ("trim", "loop", "ping-pong", "resample")
MAX_BLEND_WEIGHT = 10.0
"""The largest weight, strength or scale a blend takes: ten times a whole motion is far past any face
the model has seen, and larger values only overflow into non-finite tokens."""
FORMAT = "xnemo-motion/1"
TOKEN_SHAPE = (32, 16)
MAX_SMOOTH_SIGMA = 100.0
"""Frames; smoothing wider than this flattens any clip (and its kernel would not fit in memory)."""


@dataclass
class MotionLatent:
    tokens: torch.Tensor
    """``(F, 32, 16)`` float32 motion tokens, one row per driving frame."""
    model_id: str
    """Fingerprint of the motion encoder that made them (tokens of another encoder are meaningless)."""
    fps: float | None = None
    source_size: tuple[int, int] | None = None
    """``(height, width)`` of the driving frames."""
    boxes: torch.Tensor | None = None
    """``(F, 4)`` face crop boxes in the driving frames, when faces were detected."""

    def __post_init__(self):
        tokens = self.tokens
        if not torch.is_tensor(tokens) or not tokens.is_floating_point():
            raise ValueError(
                f"the motion tokens must be floating-point numbers, got {getattr(tokens, 'dtype', tokens)}"
            )
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != TOKEN_SHAPE or len(tokens) == 0:
            raise ValueError(f"the motion tokens have shape {tuple(tokens.shape)}, expected (frames ≥ 1, 32, 16)")
        if not torch.isfinite(tokens).all():
            raise ValueError("the motion tokens hold NaN or infinite values; extract the motion again")
        if self.fps is not None:
            check_fps(self.fps)
        size = self.source_size
        if size is not None and not (
            len(size) == 2 and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)
        ):
            raise ValueError(f"the source size must be (height, width) in whole pixels above 0, got {size!r:.60}")
        boxes = self.boxes
        if boxes is not None and not (
            torch.is_tensor(boxes)
            and boxes.is_floating_point()
            and tuple(boxes.shape) == (len(tokens), 4)
            and torch.isfinite(boxes).all()
        ):
            shape = tuple(boxes.shape) if torch.is_tensor(boxes) else type(boxes).__name__
            raise ValueError(f"the face boxes must be finite numbers of shape ({len(tokens)}, 4), got {shape}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def with_tokens(self, tokens: torch.Tensor) -> "MotionLatent":
        boxes = self.boxes if self.boxes is not None and len(self.boxes) == len(tokens) else None
        return replace(self, tokens=tokens, boxes=boxes)


def motion_encoder_id(encoder: torch.nn.Module) -> str:
    """Fingerprint of a motion encoder's weights as stored, whatever precision they run in.

    A hash of every tensor rounded to fp16, so an fp32 file and its fp16 conversion share it; take
    it before a cast to bf16 (:func:`~xnemo_core.loading.load_models` does), since bf16 rounds coarser.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(encoder.state_dict().items()):
        if not tensor.is_floating_point():  # BatchNorm step counters: no part of what it computes
            continue
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().half().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"me2-{digest.hexdigest()[:24]}"


def legacy_motion_encoder_ids(encoder: torch.nn.Module) -> set[str]:
    """The fingerprints motion files written before ``me2`` carry: sums of the output projection
    after the cast to the precision it was loaded in, for each precision."""
    weight = getattr(encoder, "final_proj", None)
    if weight is None:
        return set()
    weight = weight.weight.detach().float()
    ids = set()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        cast = weight.to(dtype).float()
        ids.add(f"me-{cast.sum().item():.6e}-{cast.abs().sum().item():.6e}")
    return ids


@dataclass(frozen=True)
class MotionEncoderId:
    """What a loaded model accepts as the motion encoder that made a motion latent."""

    current: str
    legacy: frozenset[str] = frozenset()

    @classmethod
    def of(cls, encoder: torch.nn.Module) -> "MotionEncoderId":
        return cls(motion_encoder_id(encoder), frozenset(legacy_motion_encoder_ids(encoder)))

    def accepts(self, model_id: str) -> bool:
        return model_id == self.current or model_id in self.legacy


def check_compatible(motion: MotionLatent, encoder_id: MotionEncoderId, what: str = "this model") -> None:
    if not encoder_id.accepts(motion.model_id):
        raise ValueError(
            f"the motion latent was extracted with another motion encoder ({motion.model_id}) than "
            f"{what} ({encoder_id.current}); extract it again with the model you animate with"
        )


def _check_weight(name: str, value: float, limit: float = MAX_BLEND_WEIGHT) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"the blend's {name} must be a finite number, got {value!r}")
    if abs(value) > limit:
        raise ValueError(f"the blend's {name} must be between -{limit:g} and {limit:g}, got {value:g}")


def match_length(tokens: torch.Tensor, length: int, mode: str) -> torch.Tensor:
    """``tokens`` ``(F, ...)`` made ``length`` frames long by ``mode`` (see ``LENGTH_MODES``)."""
    count = tokens.shape[0]
    if mode not in LENGTH_MODES:
        raise ValueError(f"unknown length mode {mode!r}; choose one of {', '.join(LENGTH_MODES)}")
    if count == length:
        return tokens
    if mode == "trim":
        if count < length:
            raise ValueError(f"cannot trim {count} frames to {length}; use loop, ping-pong or resample")
        return tokens[:length]
    if mode == "loop":
        return tokens[torch.arange(length) % count]
    if mode == "ping-pong":
        period = max(2 * count - 2, 1)
        index = torch.arange(length) % period
        return tokens[torch.where(index < count, index, period - index)]
    position = torch.linspace(0, count - 1, length)
    low = position.floor().long()
    high = (low + 1).clamp(max=count - 1)
    weight = (position - low).view(-1, *([1] * (tokens.dim() - 1)))
    return tokens[low] * (1 - weight) + tokens[high] * weight


def _paired(a: MotionLatent, b: MotionLatent, length_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    if a.model_id != b.model_id:
        raise ValueError("the two motion latents come from different motion encoders and cannot be blended")
    return a.tokens, match_length(b.tokens, len(a), length_mode)


def interpolate(a: MotionLatent, b: MotionLatent, weight: float, length_mode: str = "resample") -> MotionLatent:
    """``(1 - weight) · A + weight · B`` frame by frame (B fitted to A's length)."""
    _check_weight("weight", weight)
    tokens_a, tokens_b = _paired(a, b, length_mode)
    return a.with_tokens(torch.lerp(tokens_a, tokens_b, weight))


def relative(a: MotionLatent, b: MotionLatent, strength: float = 1.0, length_mode: str = "resample") -> MotionLatent:
    """A plus B's change since its first frame: B's expressions played on top of A's."""
    _check_weight("strength", strength)
    tokens_a, tokens_b = _paired(a, b, length_mode)
    return a.with_tokens(tokens_a + strength * (tokens_b - tokens_b[:1]))


def intensity(motion: MotionLatent, scale: float, neutral_frame: int = 0) -> MotionLatent:
    """Scale every frame's motion around a neutral frame (``scale`` > 1 exaggerates)."""
    _check_weight("scale", scale)
    neutral = motion.tokens[_frame_index(motion, neutral_frame)]
    return motion.with_tokens(neutral + scale * (motion.tokens - neutral))


def smooth(motion: MotionLatent, sigma_frames: float) -> MotionLatent:
    """Gaussian smoothing over time (``sigma_frames`` 0: unchanged)."""
    _check_weight("sigma", sigma_frames, limit=math.inf)
    if sigma_frames > MAX_SMOOTH_SIGMA:
        raise ValueError(f"smoothing sigma {sigma_frames:g} is above {MAX_SMOOTH_SIGMA:g} frames; use a smaller one")
    if sigma_frames <= 0:
        return motion
    flat = motion.tokens.reshape(len(motion), -1).double().numpy()
    smoothed = torch.from_numpy(gaussian_smooth(flat, sigma_frames)).float()
    return motion.with_tokens(smoothed.reshape(motion.tokens.shape))


def expression_edit(
    motion: MotionLatent, example: MotionLatent, from_frame: int, to_frame: int, strength: float
) -> MotionLatent:
    """Add ``strength`` × (example[to_frame] − example[from_frame]) to every frame, e.g. neutral → smile."""
    _check_weight("strength", strength)
    if example.model_id != motion.model_id:
        raise ValueError("the expression example comes from another motion encoder")
    delta = example.tokens[_frame_index(example, to_frame)] - example.tokens[_frame_index(example, from_frame)]
    return motion.with_tokens(motion.tokens + strength * delta)


def _frame_index(motion: MotionLatent, index: int) -> int:
    if not -len(motion) <= index < len(motion):
        raise ValueError(f"frame {index} is outside the motion's {len(motion)} frames")
    return index


def save_motion(motion: MotionLatent, path: str | Path, folder: str | Path | None = None) -> Path:
    """Write ``motion`` as ``.safetensors``; with ``folder``, ``path`` is taken within it and refused
    when it leads outside (``..``, absolute, symlinks)."""
    path = inside(folder, path, "motion file") if folder is not None else Path(path)
    tensors = {"tokens": motion.tokens.float().contiguous()}
    if motion.boxes is not None:
        tensors["boxes"] = torch.as_tensor(motion.boxes, dtype=torch.float32).contiguous()
    metadata = {
        "format": FORMAT,
        "model_id": motion.model_id,
        "fps": json.dumps(motion.fps),
        "source_size": json.dumps(list(motion.source_size) if motion.source_size else None),
    }
    with replacing(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def load_motion(path: str | Path, folder: str | Path | None = None) -> MotionLatent:
    """Read a motion file; with ``folder``, ``path`` must lie within it (as for :func:`save_motion`)."""
    path = inside(folder, path, "motion file") if folder is not None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion file not found: {path}")
    try:
        with safe_open(str(path), "pt") as file:
            metadata = file.metadata() or {}
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises several types for damaged files
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != FORMAT or "tokens" not in tensors:
        raise ValueError(f"{path}: not an X-NeMo motion file (expected format {FORMAT!r} with 'tokens')")
    try:
        size = json.loads(metadata.get("source_size", "null"))
        fps = json.loads(metadata.get("fps", "null"))
        source_size = tuple(size) if isinstance(size, list) else size
        return MotionLatent(tensors["tokens"], metadata.get("model_id", ""), fps, source_size, tensors.get("boxes"))
    except (ValueError, TypeError) as error:  # damaged JSON, or MotionLatent's own checks
        raise ValueError(f"{path}: not a valid motion file: {error}") from None
