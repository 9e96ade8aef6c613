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
