"""A procedural world of 2-D faces where identity and motion are known exactly (training data and
an exact measure of identity leakage, on any machine)."""

from .faces import (
    LANDMARKS,
    MOTION_FIELDS,
    Identity,
    landmarks,
    random_identity,
    random_motion_clip,
    render,
    render_clip,
)

__all__ = [
    "LANDMARKS",
    "MOTION_FIELDS",
    "Identity",
    "landmarks",
    "random_identity",
    "random_motion_clip",
    "render",
    "render_clip",
]
