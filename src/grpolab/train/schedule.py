"""AdamW over the trainable parameters and the learning-rate schedule (warmup, then constant,
linear decay or cosine decay to 0). The schedule advances once per optimizer step, so with
num_iterations > 1 it spans max_steps x num_iterations updates."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from grpolab.config.schema import Config


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based).

    Example, total 10, warmup 2, linear: steps 0,1 -> 0.5, 1.0; step 6 -> (10 - 6) / 8 = 0.5.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: Any, cfg: Config) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.optim.lr,
        betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
        weight_decay=cfg.optim.weight_decay,
    )
    total = cfg.train.max_steps * cfg.grpo.num_iterations
    warmup = round(cfg.optim.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg.optim.scheduler)
    )
    return optimizer, scheduler


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
