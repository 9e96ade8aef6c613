"""The learning-rate schedule: `transformers.get_scheduler`, the function TRL's trainer calls, so a
TRL user's `lr_scheduler_type` / `warmup_ratio` / `lr_scheduler_kwargs` give the same LR at every step.

Choices, and why:
- Warmup steps = ceil(warmup_ratio x total), as `TrainingArguments.get_warmup_steps` computes them.
  transformers' warmup is step / warmup, so the first optimizer step runs at LR 0 (as in TRL).
- `constant` with warmup_ratio > 0 means `constant_with_warmup`: transformers' `constant` ignores
  the warmup, and a warmup the user asked for should never be dropped silently. (It is also what
  `constant` meant here before the schedules came from transformers.)
- The schedule advances once per optimizer step, so with num_iterations > 1 it spans
  max_steps x num_iterations updates.
- `reduce_lr_on_plateau` and `greedy` are left out: they step on a metric, not on the step count.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from grpolab.config.load import ConfigError
from grpolab.config.schema import OptimConfig


def schedule_steps(optim: OptimConfig, max_steps: int, num_iterations: int) -> tuple[int, int]:
    """(total optimizer steps, warmup steps).

    >>> schedule_steps(OptimConfig(warmup_ratio=0.05), 30, 1)
    (30, 2)
    """
    total = max_steps * num_iterations
    return total, math.ceil(optim.warmup_ratio * total)


def scheduler_name(optim: OptimConfig, warmup: int) -> str:
    return "constant_with_warmup" if optim.scheduler == "constant" and warmup > 0 else optim.scheduler


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int, num_iterations: int) -> Any:
    """The LR scheduler of a run (a torch LambdaLR from transformers); bad kwargs are a ConfigError."""
    from transformers import get_scheduler

    total, warmup = schedule_steps(optim, max_steps, num_iterations)
    name = scheduler_name(optim, warmup)
    try:
        return get_scheduler(
            name,
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total,
            scheduler_specific_kwargs=dict(optim.scheduler_kwargs),
        )
    except (TypeError, ValueError) as err:
        what = f"optim.scheduler={optim.scheduler} with optim.scheduler_kwargs={optim.scheduler_kwargs}"
        raise ConfigError(f"{what}: {err}") from None


def check_scheduler(optim: OptimConfig, max_steps: int, num_iterations: int) -> None:
    """Build the schedule on a throwaway optimizer, so a missing or unknown scheduler kwarg fails
    before a model is loaded."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=optim.lr)
    build_scheduler(probe, optim, max_steps, num_iterations)
