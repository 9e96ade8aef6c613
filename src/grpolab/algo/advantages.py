"""Group-relative advantages.

GRPO replaces a learned value baseline with the mean reward of the G completions sampled for the
same question: adv[b, g] = (r[b, g] - mean_g r[b]) / scale. How we depart from the paper:
- scale is configurable: the group's std (paper), the whole batch's std (Dr. GRPO argues the
  per-group std up-weights too-easy and too-hard questions), or 1 (no scaling).
- the std gets TRL's epsilon: adv = (r - mean) / (std + 1e-4). Without it, continuous shaping
  rewards with a near-tie get full-size advantages out of noise: [1, 1.00001, 1, 1] has std 5e-6
  and would give [-0.5, 1.5, -0.5, -0.5]; with it [-0.024, 0.071, -0.024, -0.024], as in TRL.
- an all-equal group (std <= 1e-6, float noise) carries no signal: its advantage is exactly 0
  (not 0/0 = NaN, and not float noise divided by the epsilon).
- a completion no reward function could score (NaN reward) gets advantage 0 and is left out of its
  group's statistics, so one unscorable sample never poisons the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

ZERO_STD_TOLERANCE = 1e-6  # a group std at or below this is float noise: the group is all-equal
STD_EPSILON = 1e-4  # added to the std before dividing (TRL's value)


@dataclass(frozen=True)
class AdvantageStats:
    frac_reward_zero_std: float  # fraction of groups whose (scored) rewards are all equal
    mean_group_std: float  # mean over groups of the within-group (unbiased) std; not TRL's reward_std


def group_advantages(
    rewards: torch.Tensor, scale: Literal["group", "batch", "none"] = "group"
) -> tuple[torch.Tensor, AdvantageStats]:
    """rewards [B, G] (NaN = unscored) -> advantages [B, G].

    Example: rewards [[1, 0, 0, 1]] -> mean 0.5, unbiased std 0.577 -> 0.5 / (0.577 + 1e-4) ->
             [[0.8659, -0.8659, -0.8659, 0.8659]].
             rewards [[1, 1, 1, 1]] -> [[0, 0, 0, 0]], and the group counts in frac_reward_zero_std.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    scored = ~torch.isnan(rewards)  # [B, G]
    count = scored.sum(dim=1, keepdim=True)  # [B, 1]
    filled = torch.where(scored, rewards, torch.zeros_like(rewards))
    mean = filled.sum(dim=1, keepdim=True) / count.clamp(min=1)  # [B, 1]
    centred = torch.where(scored, rewards - mean, torch.zeros_like(rewards))  # [B, G]
    # Unbiased std, as torch.std and TRL use; a group with < 2 scored samples has no spread.
    group_std = (centred.pow(2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()  # [B, 1]
    group_std = torch.where(count > 1, group_std, torch.zeros_like(group_std))
    zero_std = group_std.squeeze(1) <= ZERO_STD_TOLERANCE  # [B]

    if scale == "group":
        denominator = group_std + STD_EPSILON
    elif scale == "batch":
        values = rewards[scored]
        batch_std = values.std() if values.numel() > 1 else torch.tensor(0.0)
        denominator = batch_std.expand_as(group_std) + STD_EPSILON
    elif scale == "none":
        denominator = torch.ones_like(group_std)
    else:
        raise ValueError(f"unknown advantage scale '{scale}'")
    advantages = centred / denominator  # [B, G]
    advantages = torch.where(zero_std[:, None], torch.zeros_like(advantages), advantages)
    stats = AdvantageStats(
        frac_reward_zero_std=float(zero_std.float().mean()),
        mean_group_std=float(group_std.mean()),
    )
    return advantages, stats


def decoupled_advantages(per_function: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, AdvantageStats]:
    """per_function [B, G, K] (NaN = that function did not score), weights [K] -> advantages [B, G].

    GDPO (Liu et al. 2026, arXiv 2601.05242; TRL's multi_objective_aggregation="normalize_then_sum"):
    summing the rewards first lets one reward's spread drown another's (a 0/1 correctness and a 0/0.2
    format reward collapse to a few distinct sums). Instead each function is normalised within its
    group on its own, the weighted results are summed, and the sum is normalised over the batch:
        z_k = group_advantages(r[..., k], "group");  s = sum_k w_k z_k (NaN terms drop out);
        adv = (s - mean(s)) / (std(s) + 1e-4) over the batch.
    A completion no function scored gets 0; a group whose s is all equal (e.g. every function flat)
    gets exactly 0, like group_advantages. Stats describe the weighted sums of the raw rewards.

    Example, one group of 2, correctness [1, 0] (w 1) and format [0, 1] (w 0.5): z = [0.707, -0.707]
    and [-0.707, 0.707] -> s = [0.354, -0.354] -> std 0.5 -> adv [0.707, -0.707] (both +-0.5 / 0.5001).
    """
    if per_function.dim() != 3 or per_function.shape[-1] != weights.numel():
        raise ValueError(f"per_function must be [B, G, K] with K = {weights.numel()}, got {tuple(per_function.shape)}")
    unscored = torch.isnan(per_function).all(-1)  # [B, G]
    summed = torch.zeros(per_function.shape[:2])
    for k in range(per_function.shape[-1]):
        z, _ = group_advantages(per_function[..., k], "group")  # [B, G], 0 where NaN
        summed = summed + weights[k] * torch.where(torch.isnan(per_function[..., k]), torch.zeros_like(z), z)
    summed = torch.where(unscored, torch.full_like(summed, math.nan), summed)
    values = summed[~unscored]
    mean = values.mean() if values.numel() else torch.tensor(0.0)
    std = values.std() if values.numel() > 1 else torch.tensor(0.0)
    adv = torch.nan_to_num((summed - mean) / (std + STD_EPSILON), nan=0.0)  # [B, G]
    flat = _flat_groups(summed)  # [B]
    adv = torch.where(flat[:, None], torch.zeros_like(adv), adv)
    raw = torch.where(unscored, torch.full_like(summed, math.nan), (per_function.nan_to_num() * weights).sum(-1))
    _, stats = group_advantages(raw, "group")
    return adv, stats


def _flat_groups(values: torch.Tensor) -> torch.Tensor:
    """values [B, G] (NaN = unscored) -> [B] bool: the scored values spread by <= ZERO_STD_TOLERANCE."""
    scored = ~torch.isnan(values)
    high = torch.where(scored, values, torch.full_like(values, -math.inf)).max(dim=1).values
    low = torch.where(scored, values, torch.full_like(values, math.inf)).min(dim=1).values
    return (scored.sum(dim=1) < 2) | (high - low <= ZERO_STD_TOLERANCE)
