"""AdamW and its learning-rate schedule: which parameters decay, how the LR moves step by step, and
a changed peak LR on resume.

Weight decay: not on biases and normalisation weights. Decay pulls a weight toward 0. For a matrix
that is a useful prior; a bias or a norm's gain is a per-channel offset or scale whose natural value
is not 0 (a LayerNorm/RMSNorm weight starts at 1), so decaying it only distorts the model. The HF
Trainer excludes both; we use the same rule, through transformers' own helper, so a model trained
here and with the HF Trainer decays the same tensors.

The schedule: `transformers.get_scheduler`, the function TRL's trainer calls, so a TRL user's
`lr_scheduler_type` / `warmup_ratio` / `lr_scheduler_kwargs` give the same LR at every step.
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
import warnings
from typing import Any

import torch

from grpolab.config.load import ConfigError
from grpolab.config.schema import Config, OptimConfig

# The name patterns of transformers.Trainer.get_decay_parameter_names (bias, and every spelling of norm).
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names (as in model.named_parameters()) of the parameters weight decay applies to."""
    # imported here: the command line checks the schedule (check_scheduler) before transformers loads
    from transformers.trainer_pt_utils import get_parameter_names

    return set(get_parameter_names(model, [torch.nn.LayerNorm], NO_DECAY_PATTERNS))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: [decayed ones, the rest with weight_decay 0].

    Example: a Linear(4, 4) and a LayerNorm(4) -> group 0 holds the Linear's weight; group 1 its
    bias and the LayerNorm's weight and bias. Empty groups are left out.
    """
    decayed = decay_parameter_names(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for name, p in trainable if name in decayed], "weight_decay": weight_decay},
        {"params": [p for name, p in trainable if name not in decayed], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


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
