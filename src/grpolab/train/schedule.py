"""AdamW over the trainable parameters, and the learning-rate schedule (see lr_schedule.py)."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from grpolab.config.schema import Config
from grpolab.train.lr_schedule import build_scheduler
from grpolab.train.weight_decay import parameter_groups


def build_optimizer(model: Any, cfg: Config) -> tuple[torch.optim.Optimizer, Any]:
    groups = parameter_groups(model, cfg.optim.weight_decay)  # no decay on biases and norm weights
    if not groups:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        groups,
        lr=cfg.optim.lr,
        betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
        weight_decay=cfg.optim.weight_decay,
    )
    return optimizer, build_scheduler(optimizer, cfg.optim, cfg.train.max_steps, cfg.grpo.num_iterations)


def advance_schedule(scheduler: Any, steps: int = 1) -> None:
    """Move the schedule on without an optimizer step (a step that had nothing to train, or whose
    gradient was not finite): such a step still counts toward max_steps, and the LR must follow the
    step counter. torch warns when the scheduler steps before the optimizer ever has; here that is
    intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for _ in range(steps):
            scheduler.step()


def set_peak_lr(optimizer: torch.optim.Optimizer, scheduler: Any, lr: float) -> None:
    """A resumed run with a new optim.lr: the restored optimizer and scheduler hold the old one. Set
    the new peak and the current LR at once, so the first resumed step already runs at it."""
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
