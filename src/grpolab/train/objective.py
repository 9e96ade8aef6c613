"""The objective's corrections, wired for one update: the config read once, the algo/ functions called.

Two kinds of correction, and where each is decided:
- per sequence or per token, from that row alone (sampler IS weights, the off-policy sequence mask,
  the sequence-level ratio): computed inside each micro-batch; any split gives the same numbers.
- over the whole step (the entropy quantile's threshold, the entropy bonus's token count and the
  adaptive coefficient's entropy): computed once per optimizer iteration over every rank's rows, before
  (threshold) or after (adaptive entropy) the passes, never per micro-batch (see algo.entropy).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from grpolab.algo.entropy import EntropyControl, entropy_bonus, entropy_threshold, high_entropy_mask
from grpolab.algo.importance import off_policy_sequence_mask, sampler_is_weights
from grpolab.algo.logprobs import sequence_logprobs
from grpolab.algo.objectives import Objective
from grpolab.config.schema import GRPOSection
from grpolab.parallel.distributed import DistContext
from grpolab.rollout.types import Batch

# Rows per pass of the entropy pre-pass: fixed (not train.micro_batch_size), so the entropies, and
# the tokens at the quantile threshold, are bit-identical whatever micro-batching trains the step.
ENTROPY_PASS_POSITIONS = 512


def objective_of(grpo: GRPOSection) -> Objective:
    """The surrogates' settings from the grpo section: the same names there (the level is ratio_level)."""
    settings = {f.name: getattr(grpo, f.name) for f in dataclasses.fields(Objective) if f.name != "level"}
    return Objective(level=grpo.ratio_level, **settings)


def bonus_on(grpo: GRPOSection) -> bool:
    return grpo.entropy_coef > 0 or grpo.entropy_adaptive


def needs_every_row(grpo: GRPOSection) -> bool:
    """An advantage-0 row still matters: the bonus has a gradient there, the quantile counts its tokens."""
    return bonus_on(grpo) or grpo.entropy_top_quantile < 1.0


@torch.no_grad()
def entropy_keep_mask(
    model: Any, batch: Batch, keep_quantile: float, *, temperature: float, share_prompt: bool, ctx: DistContext
) -> torch.Tensor:
    """batch of N rows -> keep [N, C] (float): trained tokens at or above the step's entropy threshold.

    The threshold is the (1 - keep_quantile) quantile over every trained token of every rank."""
    model.eval()
    rows = max(1, ENTROPY_PASS_POSITIONS // max(1, int(batch.input_ids.shape[1])))
    entropies = [
        sequence_logprobs(model, batch.select(slice(s, s + rows)), temperature, share_prompt=share_prompt)[1]
        for s in range(0, len(batch), rows)
    ]
    entropy = torch.cat(entropies) if entropies else batch.completion_mask.new_zeros(batch.completion_mask.shape)
    mask = batch.completion_mask
    local = entropy[mask > 0].float().cpu()  # [M] this rank's trained tokens
    threshold = entropy_threshold(torch.cat(ctx.gather_objects(local)), keep_quantile)
    return high_entropy_mask(entropy, mask, threshold)  # [N, C]


@dataclass
class TokenWeights:
    token: torch.Tensor | None  # [n, C] 0/1: off-policy sequence mask x entropy keep mask
    sampler: torch.Tensor | None  # [n, C]: sampler IS weights (vLLM backends with the correction on)


def micro_batch_weights(
    grpo: GRPOSection,
    logp: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    pair: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    keep: torch.Tensor | None,
) -> TokenWeights:
    """logp, old, mask [n, C]; adv [n]; pair: (old, sampler logp, sampled-token mask) when the IS
    correction is on, else None; keep [n, C] or None -> the weights of this micro-batch's policy loss."""
    sampler = None
    if pair is not None:
        sampler = sampler_is_weights(
            *pair, grpo.importance_sampling_mode, grpo.importance_sampling_min, grpo.importance_sampling_cap
        )
    token = keep
    if grpo.off_policy_mask_threshold is not None:
        # the sampler's log-probs see both drifts (updates and engine mismatch); without them, the old policy's
        behaviour, on = (pair[1], pair[2]) if pair is not None else (old, mask)
        kept = off_policy_sequence_mask(adv, logp, behaviour, on, grpo.off_policy_mask_threshold).expand_as(logp)
        token = kept if token is None else token * kept
    return TokenWeights(token, sampler)


@dataclass
class EntropyStep:
    """One optimizer iteration's entropy decisions, taken over the whole step before its passes."""

    keep: torch.Tensor | None  # [N, C] tokens above the step's entropy threshold (None: all)
    coef: float  # the bonus coefficient this iteration applies (0 when the bonus is off)
    step_tokens: float  # tokens the bonus averages over, all ranks
    local_tokens: float  # this rank's share of them
    entropy_sum: float = 0.0  # entropy summed over this rank's bonus tokens, filled by the passes

    def token_mask(self, part: slice) -> torch.Tensor | None:
        return None if self.keep is None else self.keep[part]

    def bonus(self, entropy: torch.Tensor, mask: torch.Tensor, part: slice) -> torch.Tensor:
        """entropy, mask [n, C] of one micro-batch -> its share of -coef x the step's mean entropy."""
        trained = mask if self.keep is None else self.keep[part]
        self.entropy_sum += float((entropy.detach() * trained).sum())
        return entropy_bonus(entropy, trained, self.coef, self.step_tokens)


def entropy_step(
    grpo: GRPOSection, control: EntropyControl, model: Any, batch: Batch, ctx: DistContext, shards: Any, **forward: Any
) -> EntropyStep:
    """The keep mask (entropy_top_quantile < 1, one no-grad pass) and the bonus's coefficient and token count."""
    keep = None
    if grpo.entropy_top_quantile < 1.0:
        with shards.gathered():
            keep = entropy_keep_mask(model, batch, grpo.entropy_top_quantile, ctx=ctx, **forward)
    local = float((keep if keep is not None else batch.completion_mask).sum())
    if not bonus_on(grpo):
        return EntropyStep(keep, 0.0, 0.0, local)
    total = ctx.all_reduce_sum({"tokens": local})["tokens"]
    return EntropyStep(keep, control.applied(grpo.entropy_adaptive, grpo.entropy_target), total, local)


def adapt_entropy(
    control: EntropyControl, grpo: GRPOSection, ctx: DistContext, step: EntropyStep
) -> tuple[EntropyControl, dict[str, float]]:
    """After an optimizer step: the step's mean bonus-token entropy over every rank, the control
    updated from it (adaptive), and the metrics: the coefficient applied and that entropy."""
    total = ctx.all_reduce_sum({"sum": step.entropy_sum, "tokens": step.local_tokens})
    entropy = total["sum"] / max(total["tokens"], 1.0)
    metrics = {"entropy_coef": step.coef, "entropy/bonus_mean": entropy}
    if not grpo.entropy_adaptive:
        return control, metrics
    updated = control.after_step(
        entropy,
        target=grpo.entropy_target,
        delta=grpo.entropy_coef_delta,
        low=grpo.entropy_coef_min,
        high=grpo.entropy_coef_max,
    )
    return updated, metrics
