"""Animated portrait crops pasted back into the full reference image, through a feathered mask and
optionally colour-matched to the original crop (the VAE's round trip shifts colours slightly)."""

import cv2
import numpy as np

from .face import crop_with_padding

FEATHER = 0.1
"""Width of the soft border, as a fraction of the crop's shorter side."""


def feathered_mask(height: int, width: int, feather: float = FEATHER) -> np.ndarray:
    """``(height, width)`` float32: 1 inside, falling smoothly to 0 at the edges."""
    border = max(1, int(feather * min(width, height)))
    mask = np.zeros((height, width), np.float32)
    mask[border:-border, border:-border] = 1.0
    return cv2.GaussianBlur(mask, (0, 0), border / 2)


def match_colours(frames: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``frames`` ``(F, h, w, 3)`` in [0, 1] with the per-channel Lab mean and spread of ``target``
    ``(h', w', 3)``. One transfer for the whole clip (statistics over all frames), so it cannot flicker."""
    lab = np.stack([cv2.cvtColor(frame.astype(np.float32), cv2.COLOR_RGB2LAB) for frame in frames])
    goal = cv2.cvtColor(target.astype(np.float32), cv2.COLOR_RGB2LAB)
    mean, spread = lab.mean(axis=(0, 1, 2)), lab.std(axis=(0, 1, 2)) + 1e-6
    matched = (lab - mean) / spread * goal.std(axis=(0, 1)) + goal.mean(axis=(0, 1))
    return np.clip(np.stack([cv2.cvtColor(frame, cv2.COLOR_LAB2RGB) for frame in matched]), 0, 1)


def paste_back(
    image: np.ndarray,
    frames: np.ndarray,
    box: tuple[int, int, int, int],
    feather: float = FEATHER,
    colour_match: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Each animated portrait frame resized into ``box`` of the full ``image``, blended through a
    feathered mask.

    Args:
        image: ``(H, W, 3)`` float in [0, 1], the full reference image.
        frames: ``(F, h, w, 3)`` float in [0, 1], the animated portrait crops.
        box: where the portrait crop was taken (may reach outside the image).
        colour_match: first give the frames the colours of the original crop (:func:`match_colours`).
    Returns:
        ``(F, H, W, 3)`` float32 frames and the ``(H, W)`` float32 mask they were blended with.
    """
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    original = crop_with_padding(image, box).astype(np.float32)
    resized = np.stack(
        [cv2.resize(f.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC) for f in frames]
    )
    resized = np.clip(resized, 0, 1)
    if colour_match:
        resized = match_colours(resized, original)
    mask = feathered_mask(height, width, feather)
    inside = (slice(max(top, 0), min(bottom, image.shape[0])), slice(max(left, 0), min(right, image.shape[1])))
    local = (slice(inside[0].start - top, inside[0].stop - top), slice(inside[1].start - left, inside[1].stop - left))
    out = np.repeat(image[None].astype(np.float32), len(frames), axis=0)
    out[(slice(None), *inside)] = (mask[..., None] * resized + (1 - mask[..., None]) * original)[(slice(None), *local)]
    full_mask = np.zeros(image.shape[:2], np.float32)
    full_mask[inside] = mask[local]
    return out, full_mask
