"""AdamW over the trainable parameters, and the learning-rate schedule (see lr_schedule.py)."""

from __future__ import annotations

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
