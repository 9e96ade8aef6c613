"""Truncated importance sampling for the sampler-vs-trainer log-prob mismatch.

A fast engine (vLLM) samples token t with log-prob `sample_logp`; the trainer recomputes the same
token under the same weights as `old_logp`. Kernels, reduction order and dtypes differ, so the two
are not equal, and the rollouts are slightly off-policy. The correction (TIS: Yao et al. 2025,
TRL's `vllm_importance_sampling_correction`) re-weights each trained token's policy loss by

    w = min(exp(old_logp - sample_logp), cap)        (token level, truncated above at cap)

Truncation bounds the variance a single badly-matched token could add. Weights are constants
(no gradient flows through them). Tokens with mask 0 get weight 1 (they are not trained anyway).

Worked example, cap 2: old_logp - sample_logp = [0, ln 1.5, ln 4]  ->  w = [1, 1.5, 2 (cut from 4)].
"""

from __future__ import annotations

import torch


def truncated_is_weights(
    old_logp: torch.Tensor, sample_logp: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """old_logp, sample_logp, mask [N, T] -> w [N, T], min(exp(old - sample), cap) on mask, 1 elsewhere."""
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    ratio = torch.exp(old_logp.detach() - sample_logp).clamp(max=cap)  # [N, T]
    return torch.where(mask > 0, ratio, torch.ones_like(ratio))


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
