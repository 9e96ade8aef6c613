"""The per-token surrogates of every loss_type: what multiplies the advantage, before normalising.

Each surrogate maps SurrogateInputs (logp, old_logp, adv, mask, ...) to a policy loss per token [N, T]; algo.loss then
normalises it. A loss_type is a (surrogate, normaliser) pair, chosen once from the table LOSS_TYPES:

    loss_type  surrogate  normaliser   source
    grpo       clip       grpo         DeepSeekMath, arXiv 2402.03300
    bnpo       clip       bnpo         TRL
    dr_grpo    clip       dr_grpo      Dr. GRPO, arXiv 2503.20783
    dapo       clip       dapo         DAPO, arXiv 2503.14476
    cispo      cispo      dapo         MiniMax-M1, arXiv 2506.13585 (TRL: epsilon_high is the cap, ScaleRL 2510.13786)
    sapo       sapo       grpo         SAPO, arXiv 2511.20347
    luspo      clip       luspo        LUSPO, arXiv 2602.05261 (with importance_sampling_level="sequence")
    vespo      vespo      dapo         VESPO, arXiv 2602.10693

The ratio r = pi_theta / pi_old is per token (level "token"), or, at level "sequence" (GSPO, arXiv
2507.18071), one per sequence: r_i = exp(mean over i's trained tokens of (logp - old_logp)), shape
[N, 1], broadcast over the tokens. A row with no trained token gets r = exp(0/1) = 1 (its loss is
masked out anyway). Everything here is a function of one row, so it is micro-batch invariant.

cispo and vespo are REINFORCE-style: their loss is -(a constant weight) * adv * logp, so its value
is not near 0 at ratio 1 (it is the weighted negative log-likelihood); only its gradient matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

Level = Literal["token", "sequence"]
Diagnostics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """Settings of the surrogates (TRL's names in brackets); defaults are TRL's."""

    level: Level = "token"  # [importance_sampling_level]
    sapo_temperature_pos: float = 1.0  # tau for adv > 0 [sapo_temperature_pos]
    sapo_temperature_neg: float = 1.05  # tau for adv <= 0 [sapo_temperature_neg]
    vespo_k_pos: float = 2.0  # power k for adv >= 0 [vespo_k_pos]
    vespo_lambda_pos: float = 3.0  # decay lambda for adv >= 0 [vespo_lambda_pos]
    vespo_k_neg: float = 3.0  # [vespo_k_neg]
    vespo_lambda_neg: float = 2.0  # [vespo_lambda_neg]


@dataclass(frozen=True)
class SurrogateInputs:
    """What every surrogate reads: logp, old_logp, mask [N, T]; adv [N]; the clip range; is_weights
    [N, T] (the sampler's IS weights), given only to a surrogate that folds them in (vespo)."""

    logp: torch.Tensor
    old_logp: torch.Tensor
    adv: torch.Tensor
    mask: torch.Tensor
    epsilon: float
    epsilon_high: float
    objective: Objective
    is_weights: torch.Tensor | None = None

    def ratio(self) -> torch.Tensor:
        """r = pi_theta / pi_old: [N, T] (token level) or [N, 1] (sequence level)."""
        return torch.exp(log_ratio(self.logp, self.old_logp, self.mask, self.objective.level))


def log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, level: Level) -> torch.Tensor:
    """logp, old_logp, mask [N, T] -> log r: [N, T] (token) or [N, 1] (sequence: masked mean, GSPO).

    Example (sequence): deltas [0.2, 0.4, 9] with mask [1, 1, 0] -> (0.2 + 0.4) / 2 = 0.3 for the row.
    """
    delta = logp - old_logp  # [N, T]
    if level == "token":
        return delta
    return ((delta * mask).sum(-1) / mask.sum(-1).clamp(min=1.0))[:, None]  # [N, 1]


def clip_surrogate(x: SurrogateInputs) -> tuple[torch.Tensor, Diagnostics]:
    """PPO's clipped ratio: -min(r * A, clip(r, 1 - eps, 1 + eps_high) * A). adv [N] -> loss [N, T].

    Example: r = e (log r = 1), A = +1, eps 0.2 -> -min(2.718, 1.2) = -1.2, gradient 0 (clipped).
    """
    ratio, a, logp = x.ratio(), x.adv[:, None], x.logp  # [N, T] or [N, 1]; [N, 1]; [N, T]
    clipped = torch.clamp(ratio, 1 - x.epsilon, 1 + x.epsilon_high)
    policy = -torch.min(ratio * a, clipped * a).expand_as(logp)  # [N, T]
    diag = {
        "ratio": ratio.detach().expand_as(logp),
        "low_clipped": ((ratio < 1 - x.epsilon) & (a < 0)).float().expand_as(logp),
        "high_clipped": ((ratio > 1 + x.epsilon_high) & (a > 0)).float().expand_as(logp),
    }
    return policy, diag


def cispo_surrogate(x: SurrogateInputs) -> tuple[torch.Tensor, Diagnostics]:
    """CISPO: clip the importance weight, not the update: -sg(min(r, eps_high)) * A * logp.

    Every token keeps a gradient (none is dropped by clipping), weighted by at most eps_high; TRL
    caps at epsilon_high itself (not 1 + epsilon_high), ScaleRL recommends 5.0.
    Example: r = e, eps_high 2, A = +1, logp = -1 -> weight 2 -> loss -2 * 1 * -1 = 2; d loss / d logp = -2.
    """
    ratio = x.ratio().detach()
    weight = torch.clamp(ratio, max=x.epsilon_high)  # [N, T] or [N, 1]
    policy = -weight * x.adv[:, None] * x.logp  # [N, T]
    cut = ((ratio > x.epsilon_high) & (x.adv[:, None] > 0)).float().expand_as(x.logp)
    return policy, {"ratio": ratio.expand_as(x.logp), "cispo_clip_ratio": cut}


def sapo_surrogate(x: SurrogateInputs) -> tuple[torch.Tensor, Diagnostics]:
    """SAPO: a soft gate instead of a hard clip: -(4 / tau) * sigmoid(tau * (r - 1)) * A.

    tau = sapo_temperature_pos where A > 0, sapo_temperature_neg elsewhere. At r = 1 the gate's
    slope is 4/tau * tau/4 = 1, so the on-policy gradient equals plain GRPO's; far from 1 it fades.
    Example: r = 1, tau 1, A = +1 -> -(4 / 1) * 0.5 = -2, gradient d/dr = -1 (as the unclipped -r * A).
    """
    ratio, a, objective = x.ratio(), x.adv[:, None], x.objective  # [N, T] or [N, 1]; [N, 1]
    tau = torch.where(
        a > 0, torch.full_like(a, objective.sapo_temperature_pos), torch.full_like(a, objective.sapo_temperature_neg)
    )
    policy = -(torch.sigmoid(tau * (ratio - 1)) * 4 / tau * a).expand_as(x.logp)
    return policy, {"ratio": ratio.detach().expand_as(x.logp)}


VESPO_LOG_FLOOR = math.log(1e-8)  # lower clamp of log w (TRL's, from the reference implementation)


def vespo_weights(
    adv: torch.Tensor,
    log_ratio_tokens: torch.Tensor,
    mask: torch.Tensor,
    objective: Objective,
    is_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """adv [N], log_ratio_tokens, mask [N, T] -> phi(w) [N, 1], no gradient.

    w = exp(sum over trained tokens of clamp(logp - old_logp, -20, 20)) (a product, not GSPO's mean),
    times the sampler's token IS weights if given; log w is clamped to [ln 1e-8, 20]. Then the Gamma
    weight phi(w) = e^lambda * w^k * e^(-lambda * w), normalised so phi(1) = 1, with (k, lambda) by
    the sign of A (A >= 0: the _pos pair). Example: w = 1 -> phi = e^l * 1 * e^-l = 1 for either sign;
    w = 2, k 2, lambda 3 -> e^3 * 4 * e^-6 = 4 e^-3 = 0.199.
    """
    with torch.no_grad():
        log_w = (torch.clamp(log_ratio_tokens, -20.0, 20.0) * mask).sum(-1, keepdim=True)  # [N, 1]
        if is_weights is not None:
            log_is = torch.clamp(torch.log(is_weights), VESPO_LOG_FLOOR, 20.0) * mask
            log_w = log_w + log_is.sum(-1, keepdim=True)
        log_w = torch.clamp(log_w, VESPO_LOG_FLOOR, 20.0)
        positive = adv[:, None] >= 0
        k = torch.where(positive, objective.vespo_k_pos, objective.vespo_k_neg)
        lam = torch.where(positive, objective.vespo_lambda_pos, objective.vespo_lambda_neg).clamp(min=1e-4)
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w))
        return phi.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)  # [N, 1]


def vespo_surrogate(x: SurrogateInputs) -> tuple[torch.Tensor, Diagnostics]:
    """VESPO: -phi(w) * A * logp with the sequence's smooth Gamma weight phi (see vespo_weights).

    The sampler's IS weights enter w (not the loss), so they are passed here and not multiplied after.
    """
    delta = (x.logp - x.old_logp).detach()  # [N, T]
    phi = vespo_weights(x.adv, delta, x.mask, x.objective, x.is_weights)  # [N, 1]
    policy = -phi * x.adv[:, None] * x.logp  # [N, T]
    return policy, {"ratio": torch.exp(delta), "vespo/phi_seq_mean": phi.expand_as(x.logp)}


Surrogate = Callable[[SurrogateInputs], tuple[torch.Tensor, Diagnostics]]


@dataclass(frozen=True)
class LossSpec:
    surrogate: Surrogate
    normaliser: Literal["grpo", "bnpo", "dr_grpo", "dapo", "luspo"]
    weights_inside: bool = False  # the sampler IS weights go into the surrogate, not onto its loss


LOSS_TYPES: dict[str, LossSpec] = {
    "grpo": LossSpec(clip_surrogate, "grpo"),
    "bnpo": LossSpec(clip_surrogate, "bnpo"),
    "dr_grpo": LossSpec(clip_surrogate, "dr_grpo"),
    "dapo": LossSpec(clip_surrogate, "dapo"),
    "cispo": LossSpec(cispo_surrogate, "dapo"),
    "sapo": LossSpec(sapo_surrogate, "grpo"),
    "luspo": LossSpec(clip_surrogate, "luspo"),
    "vespo": LossSpec(vespo_surrogate, "dapo", weights_inside=True),
}


def loss_spec(loss_type: str) -> LossSpec:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type '{loss_type}'; one of {', '.join(LOSS_TYPES)}")
    return LOSS_TYPES[loss_type]
