"""One GRPO update from a batch of scored rollouts: micro-batches, gradient accumulation, clipping.

Order of operations, and why:
1. Reference log-probs (beta > 0) are computed once, before any update, under no_grad: they
   must come from the frozen reference, which for LoRA is the same module with the adapter off.
2. With num_iterations = 1 the old policy is the current one, so old_logp = logp.detach() and the
   ratio is exactly 1 (no extra forward). With more iterations the old log-probs are computed once
   before the first update, as the policy moves after it.
3. Each micro-batch's loss is its share of the step loss (see algo.loss.normalise), so the summed
   gradients equal one big batch's, whatever the micro-batch size.
4. Modes are set per pass, explicitly: no-grad passes run in eval mode, gradient passes in train
   mode (where gradient checkpointing acts; dropout is off unless model.dropout), and the model is
   left in eval mode. Generation sets its own mode.
5. The objective's corrections (sampler IS modes, the off-policy mask, the entropy quantile and
   bonus; train/objective.py) are per-row inside a micro-batch, or decided once per iteration over
   the whole step: none depends on the micro-batch split (bnpo's normaliser aside).
6. Rows are ordered by length before they are cut into micro-batches (train.length_buckets), so
   the columns sequence_logprobs cuts (padding in every row of a pass) are most of the padding.
   Why not packing several sequences into one row (TRL's padding_free): exactness would need a
   block-diagonal mask (a 4D mask on CPU/sdpa: memory) or flash-attention varlen (GPU only), and it
   does not compose with the shared prompt's KV cache; ordering keeps every row's computation.
   Not for bnpo, whose normaliser is per micro-batch.
7. Under FSDP (`shards` is a ShardedModel), no-grad passes run on the gathered model, every rank runs the same number
   of training passes (zero-weighted dummies where it has fewer micro-batches), the backward loss is
   scaled by W because FSDP averages gradients, and the gradient is already reduced: no sum_gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from grpolab.algo.entropy import EntropyControl
from grpolab.algo.importance import logprob_mismatch
from grpolab.algo.logprobs import can_share_prompt, pass_positions, sequence_logprobs, shared_prompt_rows
from grpolab.algo.loss import StepTotals, grpo_loss
from grpolab.config.schema import Config, GRPOSection
from grpolab.models.loading import trainable_parameters
from grpolab.parallel.distributed import DistContext, global_step_totals
from grpolab.parallel.sharding import Shards
from grpolab.rollout.types import Batch
from grpolab.train.objective import (
    EntropyStep,
    adapt_entropy,
    bonus_on,
    entropy_step,
    micro_batch_weights,
    needs_every_row,
    objective_of,
)
from grpolab.train.precision import autocast_for
from grpolab.train.schedule import advance_schedule


@dataclass
class UpdateResult:
    metrics: dict[str, float]
    skipped_nonfinite: bool  # the gradient was NaN/inf: the optimizer step was skipped
    entropy_control: EntropyControl | None = None  # the entropy coefficient for the next step (bonus on)


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


def _chunks(n: int, size: int) -> list[slice]:
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


@torch.no_grad()
def _forward_logprobs(
    model: Any, batch: Batch, parts: list[slice], temperature: float, share_prompt: bool
) -> list[torch.Tensor]:
    model.eval()
    return [sequence_logprobs(model, batch.select(part), temperature, share_prompt=share_prompt)[0] for part in parts]


Compared = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # trainer logp, sampler logp, mask: [n, C] each


def _against_sampler(trainer_logp: torch.Tensor, sub: Batch) -> Compared:
    """The tokens to compare with the sampler: trained tokens it drew (full agent mode also trains
    tool tokens, which have no sampler log-prob: NaN)."""
    assert sub.sample_logp is not None
    return trainer_logp, torch.nan_to_num(sub.sample_logp), sub.completion_mask * torch.isfinite(sub.sample_logp)


@torch.no_grad()
def _mismatch_sample(model: Any, batch: Batch, size: int, temperature: float, share_prompt: bool) -> Compared:
    """The first micro-batch against the sampler, in one eval-mode forward."""
    model.eval()
    first = batch.select(slice(0, size))
    return _against_sampler(sequence_logprobs(model, first, temperature, share_prompt=share_prompt)[0], first)


def _dummy_pass(model: Any, batch: Batch, amp: AbstractContextManager[Any]) -> None:
    """A forward and backward that adds zero to every gradient: keeps an FSDP rank in step with
    ranks that have more micro-batches (each pass gathers and reduce-scatters every layer)."""
    ids = batch.input_ids[:1, :1] if len(batch) else torch.zeros(1, 1, dtype=torch.long)
    with amp:
        logits = model(input_ids=ids.to(next(model.parameters()).device)).logits
    (logits.sum() * 0.0).backward()


def _clip(params: list[torch.nn.Parameter], max_norm: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    full = getattr(norm, "full_tensor", None)  # FSDP: a DTensor, already reduced over the shards
    return float(full() if full is not None else norm)


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
    parts = _chunks(len(batch), micro_batch_size(cfg, batch, share_prompt))
    cap = completion_token_cap(cfg)
    totals = global_step_totals(ctx, len(batch), float(batch.completion_mask.sum()), cap, len(parts))
    whole_batch = batch
    rows = rows_with_signal(adv, cfg, has_kl_term=kl)
    if rows is not None:
        batch, adv = batch.select(rows), adv[rows]
        parts = _chunks(len(batch), micro_batch_size(cfg, batch, share_prompt)) if len(batch) else []
    # same rows, fewer padded positions per pass; not bnpo, whose normaliser is per micro-batch
    if cfg.train.length_buckets and cfg.grpo.loss_type != "bnpo" and len(batch) > 1:
        order = length_order(batch, share_prompt)
        batch, adv = batch.select(order), adv[order]
    temperature = cfg.generation.temperature
    return UpdatePlan(batch, adv, parts, totals, whole_batch, share_prompt, temperature)


@dataclass
class FixedLogprobs:
    """Log-probs computed once per update, before the policy moves: one [n, C] tensor per micro-batch."""

    ref: list[torch.Tensor] | None  # the reference's (None: no KL term)
    old: list[torch.Tensor] | None  # the policy's before the update (None: num_iterations = 1, old = logp)


def fixed_logprobs(
    model: Any,
    plan: UpdatePlan,
    reference: Callable[[], AbstractContextManager[Any]] | None,
    shards: Shards,
    num_iterations: int,
    amp: AbstractContextManager[Any],
) -> FixedLogprobs:
    forward = (plan.batch, plan.parts, plan.temperature, plan.share_prompt)
    ref = old = None
    if reference is not None:
        with reference() as ref_model, amp:
            ref = _forward_logprobs(ref_model, *forward)
    if num_iterations > 1:
        with shards.gathered(), amp:
            old = _forward_logprobs(model, *forward)
    return FixedLogprobs(ref, old)


def idle_mismatch(
    model: Any, plan: UpdatePlan, cfg: Config, shards: Shards, amp: AbstractContextManager[Any]
) -> list[Compared]:
    """Nothing to train on this rank, but the sampler-vs-trainer mismatch is logged every step:
    measured now, before the optimizer step moves the policy. Not where a forward is a collective
    (FSDP): other ranks may have rows to train."""
    whole = plan.whole_batch
    if plan.parts or whole.sample_logp is None or not len(whole) or not shards.forwards_alone:
        return []
    size = micro_batch_size(cfg, whole, plan.share_prompt)
    with amp:
        return [_mismatch_sample(model, whole, size, plan.temperature, plan.share_prompt)]


@dataclass
class Tally:
    """The update's metrics as they accumulate over micro-batches and iterations."""

    sums: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    compared: list[Compared] = field(default_factory=list)  # trained tokens against the sampler's

    def add(self, metrics: dict[str, float], tokens: float) -> None:
        """Loss shares add up to the step loss; per-token statistics are token-weighted means."""
        for key, value in metrics.items():
            share = key.startswith("loss/")
            self.sums[key] = self.sums.get(key, 0.0) + (value if share else value * tokens)
            self.weights[key] = 1.0 if share else self.weights.get(key, 0.0) + tokens

    def set(self, metrics: dict[str, float]) -> None:
        self.sums.update(metrics)
        self.weights.update(dict.fromkeys(metrics, 1.0))


def accumulate(
    model: Any,
    plan: UpdatePlan,
    fixed: FixedLogprobs,
    cfg: Config,
    entropic: EntropyStep,
    shards: Shards,
    amp: AbstractContextManager[Any],
    tally: Tally,
    first_iteration: bool,
) -> None:
    """One iteration's gradient passes: each micro-batch's loss (its share of the step loss) backward."""
    grpo, bonus = cfg.grpo, bonus_on(cfg.grpo)
    # sampler-vs-trainer mismatch: measured on every backend that kept its log-probs, corrected for vLLM
    correct = grpo.importance_sampling_correction and cfg.generation.backend != "hf"
    for index, part in enumerate(plan.parts):
        sub = plan.batch.select(part)
        with amp:
            logp, entropy = sequence_logprobs(
                model, sub, plan.temperature, share_prompt=plan.share_prompt, entropy_grad=bonus
            )  # [n, C] each
        old = fixed.old[index] if fixed.old is not None else logp.detach()
        pair = _against_sampler(old, sub) if sub.sample_logp is not None else None
        if pair is not None and first_iteration:
            tally.compared.append(pair)
        ref = fixed.ref[index] if fixed.ref is not None else None
        weights = micro_batch_weights(
            grpo, logp, old, plan.adv[part], sub.completion_mask, pair if correct else None, entropic.token_mask(part)
        )
        loss, metrics = grpo_loss(
            logp, old, ref, plan.adv[part], sub.completion_mask, epsilon=grpo.epsilon, epsilon_high=grpo.epsilon_high,
            beta=grpo.beta, loss_type=grpo.loss_type, totals=plan.totals, token_weights=weights.token,
            is_weights=weights.sampler, objective=objective_of(grpo),
        )  # fmt: skip
        if bonus:
            bonus_share = entropic.bonus(entropy, sub.completion_mask, part)
            loss, metrics["loss/entropy"] = loss + bonus_share, float(bonus_share.detach())
        (loss * shards.loss_scale).backward()
        tokens = float(sub.completion_mask.sum())
        metrics["entropy"] = float((entropy.detach() * sub.completion_mask).sum() / max(tokens, 1.0))
        tally.add(metrics, tokens)


def dummy_passes(model: Any, plan: UpdatePlan, passes: int, amp: AbstractContextManager[Any]) -> None:
    """FSDP: every rank runs `passes` training passes; a rank with fewer micro-batches pads with
    passes that add zero to every gradient (each pass gathers and reduce-scatters every layer)."""
    for _ in range(passes - len(plan.parts)):
        _dummy_pass(model, plan.batch, amp)


def fill_zero_gradients(params: list[torch.nn.Parameter]) -> None:
    """Nothing trained here: the zero gradient the skipped passes would have produced, so AdamW still
    applies its momentum (a None gradient would make it skip the parameter)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def step_unless_nonfinite(optimizer: torch.optim.Optimizer, scheduler: Any, grad_norm: float) -> bool:
    """The optimizer step, skipped when the gradient is NaN/inf (False). The scheduler advances
    either way, so the LR schedule stays aligned with the step counter (a skipped step still counts)."""
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        advance_schedule(scheduler)
        return False
    optimizer.step()
    scheduler.step()
    return True


def update_metrics(tally: Tally, plan: UpdatePlan, grpo: GRPOSection, grad_norm: float, lr: float) -> dict[str, float]:
    out = {key: tally.sums[key] / max(tally.weights[key], 1e-12) for key in tally.sums}
    if grpo.num_iterations > 1:  # loss shares were summed over the iterations
        out = {k: v / (grpo.num_iterations if k.startswith("loss/") else 1) for k, v in out.items()}
    out["loss"] = out.get("loss/policy", 0.0) + out.get("loss/kl", 0.0) + out.get("loss/entropy", 0.0)
    if tally.compared:
        old_all, sample_all, mask_all = (torch.cat(pieces) for pieces in zip(*tally.compared))
        cap = grpo.importance_sampling_cap if grpo.importance_sampling_cap is not None else math.inf
        out.update(logprob_mismatch(old_all, sample_all, mask_all, cap))
    out["train/sequences_trained"] = len(plan.batch) / max(len(plan.whole_batch), 1)
    out["train/padded_fraction"] = padded_fraction(plan.batch, plan.parts, plan.share_prompt)
    out["grad_norm"] = grad_norm
    out["learning_rate"] = lr
    return out


def policy_update(
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batch: Batch,
    adv: torch.Tensor,
    cfg: Config,
    reference: Callable[[], AbstractContextManager[Any]] | None,
    ctx: DistContext,
    shards: Shards,
    entropy_control: EntropyControl | None = None,
) -> UpdateResult:
    """batch of N sequences, adv [N] -> optimizer step(s); returns step metrics.

    reference: the frozen reference model's context, or None: the loss has no KL term (the trainer
    passes one exactly when a reference was loaded, i.e. grpo.beta > 0).
    entropy_control: the entropy coefficient carried from the previous step (None: grpo.entropy_coef)."""
    grpo = cfg.grpo
    plan = plan_update(model, batch, adv, cfg, ctx, kl=reference is not None)
    amp = autocast_for(cfg, model)  # train.precision: every forward below runs in it, no backward does
    fixed = fixed_logprobs(model, plan, reference, shards, grpo.num_iterations, amp)
    passes = shards.training_passes(ctx, len(plan.parts))  # FSDP: the most micro-batches of any rank
    params = trainable_parameters(model)
    tally = Tally(compared=idle_mismatch(model, plan, cfg, shards, amp))
    control, bonus = entropy_control or EntropyControl(grpo.entropy_coef), bonus_on(grpo)
    skipped, grad_norm = False, 0.0
    for iteration in range(grpo.num_iterations):
        # whole-step entropy decisions (threshold, bonus tokens), never per micro-batch (algo.entropy)
        with amp:
            entropic = entropy_step(
                grpo, control, model, plan.batch, ctx, shards, temperature=plan.temperature,
                share_prompt=plan.share_prompt,
            )  # fmt: skip
        model.train()  # gradient passes: activation checkpointing (if enabled) only acts in train mode
        optimizer.zero_grad(set_to_none=True)
        accumulate(model, plan, fixed, cfg, entropic, shards, amp, tally, first_iteration=iteration == 0)
        dummy_passes(model, plan, passes, amp)
        if not plan.parts:
            fill_zero_gradients(params)
        if bonus:  # the coefficient this iteration used, and the entropy it acted on (last iteration's)
            control, step_metrics = adapt_entropy(control, grpo, ctx, entropic)
            tally.set(step_metrics)
        shards.reduce_gradients(ctx, params)
        grad_norm = _clip(params, cfg.optim.max_grad_norm)
        skipped |= not step_unless_nonfinite(optimizer, scheduler, grad_norm)
    model.eval()
    out = update_metrics(tally, plan, grpo, grad_norm, float(optimizer.param_groups[0]["lr"]))
    return UpdateResult(out, skipped, control if bonus else None)
