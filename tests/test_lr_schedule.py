"""LR schedules come from transformers.get_scheduler under TRL's names; trajectories against hand values."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.trainer_utils import SchedulerType

from grpolab.config.load import ConfigError
from grpolab.config.schema import OptimConfig
from grpolab.train.optimizer import build_scheduler, check_scheduler, schedule_steps


def trajectory(steps: int, **optim: object) -> list[float]:
    """The LR of each of `steps` optimizer steps (what the step is taken with), peak LR 1."""
    cfg = OptimConfig.model_validate({"lr": 1.0, **optim})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, max_steps=steps, num_iterations=1)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_with_warmup_by_hand():
    # total 10, warmup ceil(0.2 x 10) = 2: warmup k/2 -> 0, 0.5; then (10 - k) / 8 from k = 2
    expected = [0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    assert trajectory(10, scheduler="linear", warmup_ratio=0.2) == pytest.approx(expected)


def test_cosine_without_warmup_by_hand():
    # 0.5 (1 + cos(pi k / 4)): 1, (1 + sqrt(1/2)) / 2, 1/2, (1 - sqrt(1/2)) / 2
    h = math.sqrt(0.5)
    assert trajectory(4, scheduler="cosine") == pytest.approx([1.0, (1 + h) / 2, 0.5, (1 - h) / 2])


def test_constant_with_warmup_and_plain_constant():
    assert trajectory(5, scheduler="constant_with_warmup", warmup_ratio=0.4) == pytest.approx([0, 0.5, 1, 1, 1])
    # our `constant` keeps a warmup the config asks for (transformers' `constant` would drop it)
    assert trajectory(5, scheduler="constant", warmup_ratio=0.4) == pytest.approx([0, 0.5, 1, 1, 1])
    assert trajectory(3, scheduler="constant") == [1.0, 1.0, 1.0]


def test_cosine_with_min_lr_by_hand():
    # no warmup, 4 steps, floor 0.1: 0.1 + 0.9 x 0.5 (1 + cos(pi k / 4)) -> 1, 0.868, 0.55, 0.232
    got = trajectory(4, scheduler="cosine_with_min_lr", scheduler_kwargs={"min_lr_rate": 0.1})
    h = math.sqrt(0.5)
    assert got == pytest.approx([1.0, 0.1 + 0.9 * (1 + h) / 2, 0.1 + 0.45, 0.1 + 0.9 * (1 - h) / 2])


def test_warmup_steps_are_rounded_up_as_in_trl():
    assert schedule_steps(OptimConfig(warmup_ratio=0.05), 30, 1) == (30, 2)  # ceil(1.5)
    assert schedule_steps(OptimConfig(warmup_ratio=0.1), 10, 2) == (20, 2)  # num_iterations x max_steps


def test_the_names_are_transformers_names_less_the_metric_driven_ones():
    ours = set(OptimConfig.model_fields["scheduler"].annotation.__args__)  # type: ignore[union-attr]
    theirs = {s.value for s in SchedulerType} - {"reduce_lr_on_plateau", "greedy"}
    assert ours == theirs


@pytest.mark.parametrize(
    ("optim", "message"),
    [
        ({"scheduler": "cosine_with_min_lr"}, "min_lr"),  # the floor is required
        ({"scheduler": "linear", "scheduler_kwargs": {"power": 2}}, "power"),  # not a linear argument
    ],
)
def test_bad_scheduler_kwargs_are_a_config_error(optim, message):
    with pytest.raises(ConfigError, match=message):
        check_scheduler(OptimConfig.model_validate(optim), max_steps=10, num_iterations=1)


def test_an_unknown_name_is_rejected_by_the_config():
    with pytest.raises(ValueError, match="cosine_with_min_lr"):
        OptimConfig.model_validate({"scheduler": "cosine_min"})
