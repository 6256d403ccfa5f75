"""Whether the project's Triton kernels (few-key attention, fused GEGLU) can run.

They need Triton (absent on CPU-only and most Windows installs, where PyTorch's own ops run) and
``torch.library.triton_op`` / ``wrap_triton`` (PyTorch 2.6 and later), through which
``torch.compile`` traces them into the denoiser's graph. They have no backward pass.
"""

import torch

try:
    import triton
except ImportError:
    triton = None

AVAILABLE = triton is not None and hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")
HALF_PRECISION = (torch.float16, torch.bfloat16)


def kernels_take(tokens: torch.Tensor) -> bool:
    """Whether a kernel may take ``tokens``: Triton usable, a CUDA tensor of half precision, no
    gradient wanted."""
    return AVAILABLE and tokens.is_cuda and tokens.dtype in HALF_PRECISION and not torch.is_grad_enabled()
