"""AdamW over the trainable parameters and the learning-rate schedule (warmup, then constant,
linear decay or cosine decay to 0). The schedule advances once per optimizer step, so with
num_iterations > 1 it spans max_steps x num_iterations updates."""

from __future__ import annotations

import math
from typing import Any

import torch

from grpolab.config.schema import Config
from grpolab.train.weight_decay import parameter_groups


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
    groups = parameter_groups(model, cfg.optim.weight_decay)  # no decay on biases and norm weights
    if not groups:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        groups,
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
