"""Which device and precision to run on, refused with a clear message when unusable here."""

import torch

from .choices import PRECISIONS

DTYPES = dict(zip(PRECISIONS, (torch.bfloat16, torch.float16, torch.float32), strict=True))

DEVICE_NAMES = "cpu, cuda, cuda:N or mps"


def resolve_device(name: str | None = None) -> torch.device:
    """``name`` as a usable ``torch.device``; ``None``: the first CUDA GPU if there is one, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use {DEVICE_NAMES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = (
                "without CUDA"
                if torch.version.cuda is None
                else f"with CUDA {torch.version.cuda}, but no GPU is visible"
            )
            raise ValueError(f"device {name!r}: this PyTorch is built {built}; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0 …)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: Apple's MPS is not available here; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported; use {DEVICE_NAMES}")
    return device


def default_precision(device: torch.device) -> str:
    return "fp16" if device.type == "cuda" else "fp32"


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown precision {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]
