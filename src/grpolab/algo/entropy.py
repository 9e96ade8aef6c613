"""Entropy in the objective: train only on the high-entropy "forking" tokens, and an entropy bonus.

- High-entropy token mask ("Beyond the 80/20 Rule", Wang et al. 2025, arXiv 2506.01939; TRL's
  `top_entropy_quantile` = rho): keep in the policy loss only the tokens whose entropy is at or above
  the (1 - rho) quantile of the entropies of all trained tokens. rho = 1 keeps all, rho = 0.2 is the
  paper's choice, rho = 0 keeps only the highest-entropy token(s) (ties at the threshold are all
  kept, so a batch of equal entropies keeps every token). The KL term and the normaliser still see
  every trained token, as in TRL.
  Departure from TRL: TRL takes the quantile over each micro-batch (gathered over ranks), so the
  tokens kept depend on the micro-batch split. Here the threshold is one number per optimizer
  iteration, over every trained token of the step on every rank (entropy_threshold), so the update
  is the same whatever the split. It costs one no-grad forward when num_iterations = 1.
- Entropy bonus (TRL's `entropy_coef`): loss -= coef * H, with H the mean entropy of the trained
  tokens of the whole step (the kept ones only, under the mask above), whatever the loss_type.
- Adaptive coefficient (Skywork-OR1, He et al. 2025, arXiv 2505.22312; TRL's `use_adaptive_entropy`):
  after each optimizer step coef += delta if H <= target else coef -= delta, clamped to [min, max];
  the bonus only acts in a step whose previous step's H was <= target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def entropy_threshold(entropies: torch.Tensor, keep_quantile: float) -> float:
    """entropies [M] (of every trained token of the step) -> the entropy at quantile 1 - keep_quantile.

    Linear interpolation between order statistics (torch.quantile). Example, entropies [1, 2, 3, 4, 5]
    and keep 0.4: the 0.6 quantile is at position 0.6 * 4 = 2.4 -> 3 + 0.4 * (4 - 3) = 3.4: keeps 4, 5.
    No tokens -> inf (nothing is kept; there is nothing to train anyway).
    """
    if entropies.numel() == 0:
        return math.inf
    return float(torch.quantile(entropies.double(), 1.0 - keep_quantile))


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """entropy, mask [N, T] -> keep [N, T] float: 1 where the token is trained and entropy >= threshold."""
    return ((entropy >= threshold) & (mask > 0)).to(entropy.dtype)


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, coef: float, step_tokens: float) -> torch.Tensor:
    """entropy [N, T] (with gradient), mask [N, T] -> this micro-batch's share of -coef * H (scalar).

    H is the mean over the step's `step_tokens` mask tokens, so the shares of every micro-batch and
    rank add up to -coef * H. Example: entropies [1, 3] on a step of 4 tokens, coef 0.1 -> -0.1 * 4 / 4 = -0.1.
    """
    return -coef * (entropy * mask).sum() / max(step_tokens, 1.0)


@dataclass(frozen=True)
class EntropyControl:
    """The entropy coefficient carried across steps (saved with the run state when adaptive)."""

    coef: float = 0.0
    last_entropy: float = math.inf  # H of the previous step; inf before the first

    def applied(self, adaptive: bool, target: float) -> float:
        """The coefficient this step uses: the adaptive one only once H has fallen to the target."""
        if not adaptive:
            return self.coef
        return self.coef if self.last_entropy <= target else 0.0

    def after_step(self, entropy: float, *, target: float, delta: float, low: float, high: float) -> EntropyControl:
        """Skywork-OR1's update from this step's H. Example, target 0.2, delta 0.005: coef 0.01 and H 0.1
        -> 0.015; H 0.3 -> 0.005; clamped to [low, high]."""
        coef = self.coef + delta if entropy <= target else self.coef - delta
        return EntropyControl(min(max(coef, low), high), entropy)
