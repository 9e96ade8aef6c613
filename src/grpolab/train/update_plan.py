"""Planning one update: which rows train (`rows_with_signal`), in which order (`length_order`), cut
into which micro-batches (`micro_batch_size`), and the whole-step totals that normalise the loss.

- Each micro-batch's loss is its share of the step loss (see algo.loss.normalise), so the summed
  gradients equal one big batch's, whatever the micro-batch size.
- Rows are ordered by length before they are cut into micro-batches (train.length_buckets), so
  the columns sequence_logprobs cuts (padding in every row of a pass) are most of the padding.
  Why not packing several sequences into one row (TRL's padding_free): exactness would need a
  block-diagonal mask (a 4D mask on CPU/sdpa: memory) or flash-attention varlen (GPU only), and it
  does not compose with the shared prompt's KV cache; ordering keeps every row's computation.
  Not for bnpo, whose normaliser is per micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grpolab.algo.logprobs import can_share_prompt, pass_positions, shared_prompt_rows
from grpolab.algo.loss import StepTotals
from grpolab.config.schema import Config
from grpolab.parallel.distributed import DistContext, global_step_totals
from grpolab.rollout.types import Batch
from grpolab.train.objective import needs_every_row


def completion_token_cap(cfg: Config) -> int:
    """The longest completion a rollout can have: dr_grpo's constant normaliser.

    Single-turn: generation.max_new_tokens. Agent episodes run several turns plus tool observations
    until prompt + completion reaches agent.max_total_tokens, so that (an upper bound) is the cap.
    """
    return cfg.agent.max_total_tokens if cfg.agent.enabled else cfg.generation.max_new_tokens


# Sequence positions per training pass when train.micro_batch_size is 0 (auto). Activation memory
# grows with the positions in one pass (SmolLM2-135M: ~1.5 MB per position without gradient
# checkpointing), and on CPU a smaller pass costs little speed: 32 x 124 positions in 4 passes
# instead of 1 was no slower; 512 keeps full fine-tuning of SmolLM2 under 5 GB (docs/performance.md).
AUTO_MICRO_BATCH_POSITIONS = 512


def micro_batch_size(cfg: Config, batch: Batch, shares_prompt: bool = False) -> int:
    """train.micro_batch_size, or (0 = auto) as many sequences as fit AUTO_MICRO_BATCH_POSITIONS.

    With shares_prompt a pass runs each of its groups' prompts once, so passes hold whole groups
    when one group (its prompt once, G completions) fits in 1.25 x the budget: a group cut in two
    would run its prompt twice. Otherwise a row costs its completion and a share of the prompt."""
    if cfg.train.micro_batch_size:
        return cfg.train.micro_batch_size
    budget = AUTO_MICRO_BATCH_POSITIONS
    prompt, completion = batch.prompt_length, int(batch.input_ids.shape[1]) - batch.prompt_length
    group = cfg.grpo.num_generations
    if shares_prompt and group > 1:
        whole_group = prompt + group * completion
        if whole_group <= 1.25 * budget:
            rows = group * int(1.25 * budget // max(1, whole_group))
        else:
            rows = int((budget - prompt) // max(1.0, completion + prompt / group))
    else:
        rows = budget // max(1, prompt + completion)
    return max(1, min(len(batch), rows))


def micro_batches(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def length_order(batch: Batch, share_prompt: bool) -> torch.Tensor:
    """batch of N rows -> a permutation [N] that puts rows of similar length next to each other, so
    a micro-batch's columns that are padding in every row (cut by sequence_logprobs) are most of
    its padding. Completion length first, prompt length breaks ties. With share_prompt the rows
    of a prompt stay together (its KV cache is reused within a pass), groups ordered by their
    longest row. Only the order of the passes' rows changes: each row's log-probs are computed
    as before, and the loss normalisers are whole-step totals (algo.loss.normalise)."""
    completion = batch.attention_mask[:, batch.prompt_length :].sum(1)  # [N]
    prompt = batch.attention_mask[:, : batch.prompt_length].sum(1)  # [N]
    order = torch.sort(prompt, stable=True).indices
    order = order[torch.sort(completion[order], stable=True).indices]
    rows = shared_prompt_rows(batch) if share_prompt else None
    if rows is None:
        return order
    group = rows[1]  # [N]: row -> its prompt
    key = completion * (int(prompt.max()) + 1) + prompt  # [N]: the order above as one number
    longest = key.new_zeros(len(rows[0])).scatter_reduce(0, group, key, reduce="amax")
    order = order[torch.sort(group[order], stable=True).indices]  # groups contiguous, sorted inside
    return order[torch.sort(longest[group[order]], stable=True).indices]


def padded_fraction(batch: Batch, parts: list[slice], share_prompt: bool) -> float:
    """Padded positions / positions computed, over the passes of `parts` (train/padded_fraction)."""
    counts = [pass_positions(batch.select(part), share_prompt) for part in parts]
    computed = sum(c for c, _ in counts)
    return 1.0 - sum(r for _, r in counts) / computed if computed else 0.0


def rows_with_signal(adv: torch.Tensor, cfg: Config, has_kl_term: bool) -> torch.Tensor | None:
    """adv [N] -> indices of the sequences whose passes can change the gradient, or None for all.

    With no KL term, a sequence whose advantage is exactly 0 has a loss of exactly 0 on every token
    (clipped or not, importance-weighted or not), so its forward and backward add nothing; the
    normalisers of grpo, dr_grpo and dapo come from whole-step totals, so leaving it out changes no
    other sequence's weight. Sparse rewards make this most of a batch (a real model early in
    training: 60-100% of the groups flat). Not skipped: bnpo (it divides by each micro-batch's own
    token count, which the skip would change), a KL term (it has a gradient at any advantage), and
    the entropy bonus and quantile (a gradient at any advantage; a threshold over every token).
    """
    if has_kl_term or cfg.grpo.loss_type == "bnpo" or not cfg.train.skip_zero_advantage or needs_every_row(cfg.grpo):
        return None
    rows = torch.nonzero(adv != 0).flatten()
    return None if len(rows) == len(adv) else rows


@dataclass
class UpdatePlan:
    """What one update trains: the rows that can change the gradient, in pass order, in micro-batches."""

    batch: Batch  # the rows trained (ordered by length with train.length_buckets)
    adv: torch.Tensor  # [len(batch)]
    parts: list[slice]  # the micro-batches, as rows of `batch`
    totals: StepTotals  # whole-step counts over every rank and every row (the loss normalisers)
    whole_batch: Batch  # every row of this rank's step, trained or not
    share_prompt: bool  # a group's prompt runs once per pass (its KV cache reused by the group's rows)
    temperature: float


def plan_update(model: Any, batch: Batch, adv: torch.Tensor, cfg: Config, ctx: DistContext, kl: bool) -> UpdatePlan:
    """batch of N sequences, adv [N] -> the plan; kl: the loss has a KL term (a reference is given).

    The totals count every row on every rank: each rank's loss is then its share of the global loss,
    and summing gradients over ranks gives exactly the single-process gradient. Rows left out by
    `rows_with_signal` keep their place in the totals, so the gradient is unchanged."""
    share_prompt = cfg.train.share_prompt and can_share_prompt(model, training=True)
    parts = micro_batches(len(batch), micro_batch_size(cfg, batch, share_prompt))
    cap = completion_token_cap(cfg)
    totals = global_step_totals(ctx, len(batch), float(batch.completion_mask.sum()), cap, len(parts))
    whole_batch = batch
    rows = rows_with_signal(adv, cfg, has_kl_term=kl)
    if rows is not None:
        batch, adv = batch.select(rows), adv[rows]
        parts = micro_batches(len(batch), micro_batch_size(cfg, batch, share_prompt)) if len(batch) else []
    # same rows, fewer padded positions per pass; not bnpo, whose normaliser is per micro-batch
    if cfg.train.length_buckets and cfg.grpo.loss_type != "bnpo" and len(batch) > 1:
        order = length_order(batch, share_prompt)
        batch, adv = batch.select(order), adv[order]
    temperature = cfg.generation.temperature
    return UpdatePlan(batch, adv, parts, totals, whole_batch, share_prompt, temperature)
