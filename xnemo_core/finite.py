"""Refusing NaN or infinite values between the stages of a run, before they end as black frames."""

import torch


class NonFiniteError(ValueError):
    """A stage of the pipeline produced NaN or infinite values: its weights (or the precision) are at fault."""


def check_finite(stage: str, *tensors: torch.Tensor) -> None:
    """Refuse to go on from ``stage`` (its name in words) with NaN or infinite values, which would
    end as black frames."""
    if not all(bool(torch.isfinite(tensor).all()) for tensor in tensors):
        raise NonFiniteError(
            f"{stage} produced NaN or infinite values, so no frame was written; its weights are damaged, "
            "or the precision overflows (try --dtype fp32, or bf16 on a GPU)"
        )
