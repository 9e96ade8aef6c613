"""The GRPO objective: clipped ratio surrogate minus beta * KL(k3), summed over trained tokens.

Per token t of completion i (mask 1 only):
    ratio = exp(logp - old_logp)
    surrogate = min(ratio * adv_i, clip(ratio, 1 - eps, 1 + eps_high) * adv_i)
    kl = exp(ref_logp - logp) - (ref_logp - logp) - 1        (k3: unbiased, always >= 0)
    per_token_loss = -(surrogate - beta * kl)

How the token losses become one number is the only difference between the loss variants, so it
is one normaliser, not four code paths:
    grpo    (paper)   mean over each sequence's tokens, then mean over sequences
    bnpo              mean over micro-batches of (sum / number of mask tokens in that micro-batch)
    dr_grpo           sum / (number of sequences x max_completion_length)   (no length bias)
    dapo    (default) sum / number of mask tokens in the whole step (all micro-batches)
Every normaliser except bnpo is computed over the full step, so splitting a step into micro-batches
and accumulating gradients gives the same update as one big batch. bnpo normalises each
micro-batch by its own token count (TRL's definition), so its update depends on the micro-batching
by design; each micro-batch's share is its local loss / the step's number of micro-batches (all
ranks), so the shares still add up to the step loss: the mean of the local losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


@dataclass(frozen=True)
class StepTotals:
    """Counts over the whole optimizer step, needed by the step-level normalisers."""

    num_sequences: int
    num_tokens: float  # mask tokens in the whole step
    max_completion_length: int
    num_micro_batches: int = 1  # micro-batches in the whole step, summed over ranks (bnpo's mean)


def per_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    adv: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """logp, old_logp, ref_logp [N, T]; adv [N] -> (policy loss [N, T], beta * kl [N, T], diagnostics).

    Worked example: logp - old_logp = 1 (ratio e = 2.718), adv = +1, eps = 0.2: the clipped term
    1.2 * 1 is the smaller, so the policy loss is -1.2 and its gradient is 0 (clipped region).
    """
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logp - old_logp)  # [N, T]
    adv = adv[:, None]  # [N, 1]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high) * adv
    policy = -torch.min(unclipped, clipped)  # [N, T]
    diagnostics = {
        "ratio": ratio.detach(),
        "low_clipped": ((ratio < 1 - epsilon) & (adv < 0)).float(),
        "high_clipped": ((ratio > 1 + high) & (adv > 0)).float(),
    }
    kl_term = torch.zeros_like(policy)
    if ref_logp is not None and beta != 0.0:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1  # [N, T], k3 estimator: >= 0, unbiased for KL(pi || ref)
        kl_term = beta * kl
        diagnostics["kl"] = kl.detach()
    return policy, kl_term, diagnostics


def normalise(token_loss: torch.Tensor, mask: torch.Tensor, loss_type: LossType, totals: StepTotals) -> torch.Tensor:
    """token_loss, mask [N, T] -> this micro-batch's share of the step loss (a scalar).

    Worked example, 2 sequences with 1 and 3 trained tokens of loss 1 each (sum 4):
      grpo: (1/1 + 3/3) / 2 = 1;  bnpo/dapo: 4 / 4 = 1;  dr_grpo (max len 4): 4 / (2 * 4) = 0.5.
      bnpo in a step of 4 micro-batches: this one's share is (4 / 4) / 4 = 0.25.
    """
    masked = token_loss * mask
    if loss_type == "grpo":
        per_sequence = masked.sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
        return per_sequence.sum() / totals.num_sequences
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1) / totals.num_micro_batches
    if loss_type == "dr_grpo":
        return masked.sum() / (totals.num_sequences * totals.max_completion_length)
    if loss_type == "dapo":
        return masked.sum() / max(totals.num_tokens, 1.0)
    raise ValueError(f"unknown loss_type '{loss_type}'")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    adv: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float | None,
    beta: float,
    loss_type: LossType,
    totals: StepTotals,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """logp, old_logp, ref_logp, mask [N, T]; adv [N] -> (scalar loss, metrics of this micro-batch).

    token_weights [N, T], optional: constants multiplying each token's policy loss (not the KL
    term), e.g. the truncated importance weights of algo.importance.

    The returned loss (and its `loss/*` metrics) is this micro-batch's share: summing it over the
    micro-batches of a step, on every rank, gives the step loss, for every loss_type.
    """
    policy, kl_term, diag = per_token_loss(
        logp, old_logp, ref_logp, adv, epsilon=epsilon, epsilon_high=epsilon_high, beta=beta
    )
    if token_weights is not None:
        policy = policy * token_weights.detach()
    policy_loss = normalise(policy, mask, loss_type, totals)
    kl_loss = normalise(kl_term, mask, loss_type, totals)
    tokens = mask.sum().clamp(min=1)

    def masked_mean(values: torch.Tensor) -> float:
        return float((values * mask).sum() / tokens)

    metrics = {
        "loss/policy": float(policy_loss.detach()),
        "loss/kl": float(kl_loss.detach()),
        "clip_ratio/low_mean": masked_mean(diag["low_clipped"]),
        "clip_ratio/high_mean": masked_mean(diag["high_clipped"]),
        "clip_ratio/region_mean": masked_mean(diag["low_clipped"] + diag["high_clipped"]),
        "ratio_mean": masked_mean(diag["ratio"]),
    }
    if "kl" in diag:
        metrics["kl"] = masked_mean(diag["kl"])
    return policy_loss + kl_loss, metrics
