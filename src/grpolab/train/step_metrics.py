"""What a training step reports about its rollouts and rewards (TRL's metric names), and how the
per-rank values combine under several processes."""

from __future__ import annotations

import math
import statistics
from typing import Literal

import torch

from grpolab.rewards import RewardScores
from grpolab.rollout.types import Rollout

# how per-rank rollout statistics combine: counts add, extremes take min/max, the rest is a mean
LOCAL_METRIC_OPS: dict[str, Literal["sum", "min", "max"]] = {
    "tokens/trainable": "sum",
    "tokens/total": "sum",
    "completions/min_length": "min",
    "completions/max_length": "max",
}


def reward_tensor(scores: RewardScores, num_questions: int, group: int) -> torch.Tensor:
    """Weighted totals as [B, G], NaN where no reward function could score the sample."""
    values = [math.nan if v is None else float(v) for v in scores.total]
    return torch.tensor(values, dtype=torch.float32).view(num_questions, group)


def reward_statistics(rewards: torch.Tensor) -> dict[str, float]:
    """rewards [B, G] of the whole step (NaN = unscored) -> statistics over the scored ones.

    `reward_std` means what TRL logs: the std over the whole batch, unbiased (n - 1, torch.std's
    default), like every std we log. [[1, 1, 0, 0], [1, 1, 1, 1]] -> sqrt(1.5 / 7) = 0.463; the mean
    within-group std (0.289 there) is `reward/mean_group_std`, from algo.advantages.
    """
    scored = rewards[~torch.isnan(rewards)].tolist()
    if not scored:
        return {"reward": math.nan}
    return {
        "reward": statistics.fmean(scored),
        "reward_std": statistics.stdev(scored) if len(scored) > 1 else 0.0,
        "reward/median": statistics.median(scored),
        "reward/min": min(scored),
        "reward/max": max(scored),
    }


def completion_statistics(rollouts: list[Rollout]) -> dict[str, float]:
    lengths = [sum(r.completion_mask) for r in rollouts]
    totals = [len(r.completion_ids) for r in rollouts]
    return {
        "completions/mean_length": statistics.fmean(lengths),
        "completions/min_length": float(min(lengths)),
        "completions/max_length": float(max(lengths)),
        "completions/clipped_ratio": statistics.fmean(float(r.truncated) for r in rollouts),
        "tokens/trainable": float(sum(lengths)),
        "tokens/total": float(sum(totals) + sum(len(r.prompt_ids) for r in rollouts)),
    }
