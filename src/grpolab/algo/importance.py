"""Truncated importance sampling for the sampler-vs-trainer log-prob mismatch.

A fast engine (vLLM) samples token t with log-prob `sample_logp`; the trainer recomputes the same
token under the same weights as `old_logp`. Kernels, reduction order and dtypes differ, so the two
are not equal, and the rollouts are slightly off-policy. The correction (TIS: Yao et al. 2025,
TRL's `vllm_importance_sampling_correction`) re-weights each trained token's policy loss by

    w = min(exp(old_logp - sample_logp), cap)        (token level, truncated above at cap)

Truncation bounds the variance a single badly-matched token could add. Weights are constants
(no gradient flows through them). Tokens with mask 0 get weight 1 (they are not trained anyway).

Worked example, cap 2: old_logp - sample_logp = [0, ln 1.5, ln 4]  ->  w = [1, 1.5, 2 (cut from 4)].

sampler_is_weights generalises this to TRL's four `vllm_importance_sampling_mode`s: the ratio per
token or per sequence (exp of the SUM of the token log-ratios), and out-of-range ratios truncated
into [low, high] or masked to 0 (IcePop-style masked IS). TRL's default is sequence_mask, C_max 3.

off_policy_sequence_mask is DeepSeek-V3.2's off-policy sequence masking (arXiv 2512.02556, eq. 9):
a sequence with a negative advantage whose policy has drifted too far from the one that sampled it
is dropped from the policy loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

IsMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


def truncated_is_weights(
    old_logp: torch.Tensor, sample_logp: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """old_logp, sample_logp, mask [N, T] -> w [N, T], min(exp(old - sample), cap) on mask, 1 elsewhere."""
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    return sampler_is_weights(old_logp, sample_logp, mask, "token_truncate", None, cap)  # grpolab's default mode


def logprob_mismatch(
    old_logp: torch.Tensor, sample_logp: torch.Tensor, mask: torch.Tensor, cap: float
) -> dict[str, float]:
    """Mean and max |old_logp - sample_logp| over mask tokens, and the share of them the cap cuts.

    Worked example, cap 2: deltas [0.1, -0.3, ln 4] on mask -> mean (0.1 + 0.3 + 1.386) / 3 = 0.595,
    max 1.386, truncated 1/3.
    """
    delta = old_logp.detach() - sample_logp  # [N, T]
    on = mask > 0
    if not bool(on.any()):
        return {"mismatch/logp_abs_mean": 0.0, "mismatch/logp_abs_max": 0.0, "mismatch/is_truncated_frac": 0.0}
    picked = delta[on]  # [M] trained tokens only
    return {
        "mismatch/logp_abs_mean": float(picked.abs().mean()),
        "mismatch/logp_abs_max": float(picked.abs().max()),
        "mismatch/is_truncated_frac": float((picked.exp() > cap).float().mean()),
    }


def sampler_is_weights(
    old_logp: torch.Tensor,
    sample_logp: torch.Tensor,
    mask: torch.Tensor,
    mode: IsMode,
    low: float | None,
    high: float | None,
) -> torch.Tensor:
    """old_logp, sample_logp, mask [N, T] -> w [N, T]: the sampler IS weight of each token (no gradient).

    Token modes: r_t = exp(old_logp - sample_logp) per mask token (1 off the mask). Sequence modes:
    r = exp(sum over mask tokens of (old_logp - sample_logp)), the same for every token of the row.
    *_truncate clamps r into [low, high]; *_mask sets r to 0 outside [low, high]. None = no bound.
    Worked example, [low, high] = [0.5, 2], log-ratios [ln 4, ln 0.25] on one row of two tokens:
      token_truncate [2, 0.5]; token_mask [0, 0]; sequence_*: r = exp(ln 4 + ln 0.25) = 1 -> [1, 1].
    """
    delta = (old_logp.detach() - sample_logp) * mask  # [N, T], 0 off the mask
    if mode.startswith("sequence"):
        delta = delta.sum(-1, keepdim=True)  # [N, 1]
    ratio = torch.exp(delta)
    if mode.endswith("truncate"):
        ratio = torch.clamp(ratio, min=low, max=high)
    else:
        outside = (ratio < (-math.inf if low is None else low)) | (ratio > (math.inf if high is None else high))
        ratio = ratio.masked_fill(outside, 0.0)
    ratio = ratio.expand_as(old_logp)
    return torch.where(mask > 0, ratio, torch.ones_like(ratio))


def off_policy_sequence_mask(
    adv: torch.Tensor, logp: torch.Tensor, behaviour_logp: torch.Tensor, mask: torch.Tensor, threshold: float
) -> torch.Tensor:
    """adv [N]; logp, behaviour_logp, mask [N, T] -> keep [N, 1], 1.0 = keep, 0.0 = drop (no gradient).

    kl_i = mean over i's mask tokens of (behaviour_logp - logp): how much less likely the current
    policy finds the sampled tokens. Keep if A_i >= 0 or kl_i <= threshold: a negative advantage
    computed under another policy is the signal most likely to be wrong, a positive one is kept.
    behaviour_logp: the sampler's log-probs (vLLM), else the old policy's. A row with no mask token
    has kl 0 and is kept. Example, threshold 0.5: A = -1, deltas [1, 0] -> kl 0.5 -> kept; [1, 1] -> dropped.
    """
    delta = (behaviour_logp - logp.detach()) * mask  # [N, T]
    kl = delta.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)  # [N, 1]
    return ((adv[:, None] >= 0) | (kl <= threshold)).to(logp.dtype)
