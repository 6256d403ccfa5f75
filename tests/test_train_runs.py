"""The loop every training shares (xnemo_core.train.runs): accumulation, clipping, schedule, settings."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from xnemo_core.train import runs

INPUTS = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
TARGETS = INPUTS @ torch.tensor([[1.0], [-2.0], [0.5]]) + 3.0


def fitted(tmp_path, steps=2, **settings):
    """A linear model trained by :func:`runs.updates`; returns it with the records seen per update."""
    settings = runs.RunSettings(str(tmp_path), steps=steps, learning_rate=0.1, **settings)
    output, accelerator = runs.start(settings)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    loader = DataLoader(TensorDataset(INPUTS, TARGETS), batch_size=settings.batch_size)
    model, loader = accelerator.prepare(model, loader)
    part = runs.optimisation(accelerator, settings, model.parameters())
    seen = []
    part.optimizer.optimizer.register_step_pre_hook(
        lambda *_: seen.append(
            {
                "norm": torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item(),
                "lr": part.optimizer.param_groups[0]["lr"],
            }
        )
    )

    def losses(batch):
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        return [loss], {"loss": loss}

    steps_seen = [step for step, _ in runs.updates(accelerator, settings, loader, [model], [part], losses)]
    assert steps_seen == list(range(1, steps + 1))
    return model, seen


def test_accumulated_batches_update_as_one_large_batch(tmp_path):
    whole, whole_seen = fitted(tmp_path / "a", batch_size=4)
    accumulated, accumulated_seen = fitted(tmp_path / "b", batch_size=2, gradient_accumulation_steps=2)
    assert len(accumulated_seen) == len(whole_seen) == 2  # one optimiser step per update
    for a, b in zip(whole.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b)
    assert whole_seen[0]["norm"] == pytest.approx(accumulated_seen[0]["norm"], rel=1e-5)


def test_gradients_are_clipped_before_each_update(tmp_path):
    _, free = fitted(tmp_path / "a", batch_size=4)
    _, clipped = fitted(tmp_path / "b", batch_size=4, max_grad_norm=0.5)
    assert free[0]["norm"] > 1 and clipped[0]["norm"] == pytest.approx(0.5, rel=1e-4)


def test_the_learning_rate_follows_its_schedule(tmp_path):
    _, constant = fitted(tmp_path / "a", steps=4, batch_size=2)
    _, warmed = fitted(tmp_path / "b", steps=4, batch_size=2, lr_scheduler="linear", lr_warmup_steps=2)
    assert [s["lr"] for s in constant] == [0.1] * 4
    assert [s["lr"] for s in warmed] == pytest.approx([0.0, 0.05, 0.1, 0.05])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be at least 1"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be above 0"),
    ],
)
def test_run_settings_are_checked(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        runs.start(runs.RunSettings(str(tmp_path), **settings))


def test_periodic_actions_fall_every_n_steps_and_at_the_end():
    settings = runs.RunSettings("unused", steps=7)
    assert [step for step in range(1, 8) if runs.due(step, 3, settings)] == [3, 6, 7]
