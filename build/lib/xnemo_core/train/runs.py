"""What every training (X-NeMo, VAE, motion-encoder pretraining) shares: its run settings, an
output folder with an accelerate run, the optimiser updates (gradient accumulation, clipping,
learning-rate schedule), and a JSON-lines log that also feeds an optional callback (progress bars)."""

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import KW_ONLY, dataclass, fields
from pathlib import Path

import torch
from torch import nn


@dataclass
class RunSettings:
    """The settings of any training run; each kind of training adds its own (and its defaults)."""

    output_dir: str
    _: KW_ONLY
    steps: int = 1000
    """Optimiser updates (each of ``batch_size`` × ``gradient_accumulation_steps`` samples per process)."""
    batch_size: int = 4
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    """A diffusers ``get_scheduler`` name: ``constant``, ``constant_with_warmup``, ``linear``, ``cosine``, …"""
    lr_warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None
    """Clip the gradients' global norm to this before each update; ``None``: no clipping."""
    mixed_precision: str = "no"
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0

    def validate(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be above 0 (or null for no clipping), got {self.max_grad_norm}")

    @property
    def samples_per_process(self) -> int:
        return self.steps * self.batch_size * self.gradient_accumulation_steps


def read_settings(cls, path: str | Path | None = None, **overrides):
    """A settings dataclass (a :class:`RunSettings`) from a YAML (or JSON) file of its fields, if
    given, and ``overrides``, which win."""
    import yaml

    data = {**((yaml.safe_load(Path(path).read_text()) or {}) if path else {}), **overrides}
    unknown = set(data) - {field.name for field in fields(cls)}
    if unknown:
        raise ValueError(f"{path or 'settings'}: unknown training settings {sorted(unknown)}")
    return cls(**data)


def start(settings: RunSettings):
    """Check ``settings``, create the output folder and return it with a seeded ``accelerate.Accelerator``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    settings.validate()
    output = Path(settings.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        # YAML (files and ``--set``) reads a bare ``no`` as false.
        mixed_precision=settings.mixed_precision or "no",
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        project_dir=str(output),
    )
    set_seed(settings.seed)
    return output, accelerator


@dataclass
class Optimisation:
    """One optimiser with its learning-rate schedule and the parameters it updates (clipped together)."""

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    parameters: list[nn.Parameter]


def optimisation(
    accelerator, settings: RunSettings, parameters: Iterable[nn.Parameter], learning_rate: float | None = None, **adam
) -> Optimisation:
    """AdamW over ``parameters`` (at ``learning_rate``, default the settings') on the settings'
    schedule, prepared by ``accelerator``."""
    from diffusers.optimization import get_scheduler

    parameters = list(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate or settings.learning_rate, **adam)
    # The prepared schedule steps once per process on each update, as in diffusers' training scripts.
    schedule = get_scheduler(
        settings.lr_scheduler,
        optimizer,
        num_warmup_steps=settings.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=settings.steps * accelerator.num_processes,
    )
    optimizer, schedule = accelerator.prepare(optimizer, schedule)
    return Optimisation(optimizer, schedule, parameters)


def updates(
    accelerator,
    settings: RunSettings,
    loader: Iterable,
    modules: list[nn.Module],
    optimisations: list[Optimisation],
    losses: Callable[[object], tuple[list[torch.Tensor], dict]],
    first_step: int = 0,
) -> Iterator[tuple[int, dict]]:
    """The training loop every run shares. ``losses(batch)`` gives one loss per optimisation (each
    reaching only its own parameters) and a record of tensors to log. Gradients add up over
    ``gradient_accumulation_steps`` batches, are clipped to ``max_grad_norm`` and applied; after each
    update this yields the step number (from ``first_step`` + 1 to ``steps``) and the last record."""
    step = first_step
    while step < settings.steps:
        for batch in loader:
            with accelerator.accumulate(*modules):
                batch_losses, record = losses(batch)
                for loss in batch_losses:
                    accelerator.backward(loss)
                for part in optimisations:
                    if accelerator.sync_gradients and settings.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(part.parameters, settings.max_grad_norm)
                    part.optimizer.step()
                    part.schedule.step()
                    part.optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            yield step, record
            if step >= settings.steps:
                return


def due(step: int, every: int, settings: RunSettings) -> bool:
    """Whether a periodic action (log, checkpoint) falls on ``step``: every ``every`` steps and at the end."""
    return step % every == 0 or step == settings.steps


class RunLog:
    """Appends records to ``path``, one JSON object per line, and passes them to ``on_log``."""

    def __init__(self, path: Path, on_log=None):
        self.file, self.on_log = path.open("a"), on_log

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.on_log is not None:
            self.on_log(record)

    def close(self) -> None:
        self.file.close()
