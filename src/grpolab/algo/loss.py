"""The GRPO objective: clipped ratio surrogate minus beta * KL(k3), summed over trained tokens.

Per token t of completion i (mask 1 only):
    ratio = exp(logp - old_logp)
    surrogate = min(ratio * adv_i, clip(ratio, 1 - eps, 1 + eps_high) * adv_i)
    kl = exp(ref_logp - logp) - (ref_logp - logp) - 1        (k3: unbiased, always >= 0)
    per_token_loss = -(surrogate - beta * kl)

The surrogate above is the clipped one; cispo, sapo, vespo and the sequence-level ratio (GSPO)
swap it for another (algo.objectives: each loss_type is a (surrogate, normaliser) pair, chosen once).
How the token losses become one number is one normaliser, not a code path per loss_type:
    grpo    (paper)   mean over each sequence's tokens, then mean over sequences      (also sapo)
    bnpo              mean over micro-batches of (sum / number of mask tokens in that micro-batch)
    dr_grpo           sum / (number of sequences x max_completion_length)   (no length bias)
    dapo    (default) sum / number of mask tokens in the whole step (all micro-batches) (cispo, vespo)
    luspo             sum / number of sequences: each sequence's loss scaled by its length (LUSPO)
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

from grpolab.algo.objectives import Objective, SurrogateInputs, loss_spec

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"]
Normaliser = Literal["grpo", "bnpo", "dr_grpo", "dapo", "luspo"]


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
    kl_term = k3_term(logp, ref_logp, beta, diagnostics)
    return policy, kl_term, diagnostics


def normalise(token_loss: torch.Tensor, mask: torch.Tensor, loss_type: Normaliser, totals: StepTotals) -> torch.Tensor:
    """token_loss, mask [N, T] -> this micro-batch's share of the step loss (a scalar).

    Worked example, 2 sequences with 1 and 3 trained tokens of loss 1 each (sum 4):
      grpo: (1/1 + 3/3) / 2 = 1;  bnpo/dapo: 4 / 4 = 1;  dr_grpo (max len 4): 4 / (2 * 4) = 0.5;
      luspo: 4 / 2 = 2 (sequence losses 1 and 1, scaled by lengths 1 and 3).
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
    if loss_type == "luspo":
        # TRL: mean over sequences of (sequence loss x length). For a sequence-level ratio the token
        # losses of a row are equal, so the row's masked sum is exactly loss x length; for a token
        # ratio this is that row's mean times its length (TRL would average over padding too).
        return masked.sum() / totals.num_sequences
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
    is_weights: torch.Tensor | None = None,
    objective: Objective | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """logp, old_logp, ref_logp, mask [N, T]; adv [N] -> (scalar loss, metrics of this micro-batch).

    token_weights [N, T], optional: constants multiplying each token's policy loss (not the KL
    term): the off-policy and entropy masks, 0 or 1. is_weights [N, T], optional: the sampler's
    importance weights (algo.importance); they multiply the policy loss too, except for vespo,
    whose surrogate folds them into its sequence weight. objective: the surrogates' settings.

    The returned loss (and its `loss/*` metrics) is this micro-batch's share: summing it over the
    micro-batches of a step, on every rank, gives the step loss, for every loss_type.
    """
    spec = loss_spec(loss_type)
    policy, diag = spec.surrogate(
        SurrogateInputs(
            logp, old_logp, adv, mask, epsilon=epsilon,
            epsilon_high=epsilon if epsilon_high is None else epsilon_high, objective=objective or Objective(),
            is_weights=is_weights.detach() if is_weights is not None and spec.weights_inside else None,
        )
    )  # fmt: skip
    kl_term = k3_term(logp, ref_logp, beta, diag)
    for weights in (token_weights, None if spec.weights_inside else is_weights):
        if weights is not None:
            policy = policy * weights.detach()
    policy_loss = normalise(policy, mask, spec.normaliser, totals)
    kl_loss = normalise(kl_term, mask, spec.normaliser, totals)
    tokens = mask.sum().clamp(min=1)

    def masked_mean(values: torch.Tensor) -> float:
        return float((values * mask).sum() / tokens)

    metrics = {"loss/policy": float(policy_loss.detach()), "loss/kl": float(kl_loss.detach())}
    if "low_clipped" in diag:  # the clipped surrogate's clip shares (TRL's names)
        low, high = diag.pop("low_clipped"), diag.pop("high_clipped")
        metrics["clip_ratio/low_mean"] = masked_mean(low)
        metrics["clip_ratio/high_mean"] = masked_mean(high)
        metrics["clip_ratio/region_mean"] = masked_mean(low + high)
    metrics["ratio_mean"] = masked_mean(diag.pop("ratio"))
    metrics.update({name: masked_mean(values) for name, values in diag.items()})  # kl, cispo, vespo
    return policy_loss + kl_loss, metrics


def k3_term(
    logp: torch.Tensor, ref_logp: torch.Tensor | None, beta: float, diag: dict[str, torch.Tensor]
) -> torch.Tensor:
    """logp, ref_logp [N, T] -> beta * k3 [N, T] (zeros without a reference); records diag["kl"]."""
    if ref_logp is None:
        return torch.zeros_like(logp)
    delta = ref_logp - logp
    kl = torch.exp(delta) - delta - 1  # [N, T], k3 estimator: >= 0, unbiased for KL(pi || ref)
    diag["kl"] = kl.detach()
    return beta * kl
