"""One GRPO update from a batch of scored rollouts: micro-batches, gradient accumulation, clipping.

Order of operations, and why:
1. Reference log-probs (beta > 0) are computed once, before any update, under no_grad: they
   must come from the frozen reference, which for LoRA is the same module with the adapter off.
2. With num_iterations = 1 the old policy is the current one, so old_logp = logp.detach() and the
   ratio is exactly 1 (no extra forward). With more iterations the old log-probs are computed once
   before the first update, as the policy moves after it.
3. Planning (train/update_plan.py): the rows that can change the gradient, ordered by length and
   cut into micro-batches, each micro-batch's loss its share of the whole step's (algo.loss.normalise).
4. Modes are set per pass, explicitly: no-grad passes run in eval mode, gradient passes in train
   mode (where gradient checkpointing acts; dropout is off unless model.dropout), and the model is
   left in eval mode. Generation sets its own mode.
5. The objective's corrections (sampler IS modes, the off-policy mask, the entropy quantile and
   bonus; train/objective.py) are per-row inside a micro-batch, or decided once per iteration over
   the whole step: none depends on the micro-batch split (bnpo's normaliser aside).
6. The update never asks whether the model is sharded; the sharding object (parallel/sharding.py)
   answers: under FSDP no-grad passes run on the gathered model, every rank runs the same number of
   training passes (zero-weighted dummies where it has fewer micro-batches), the backward loss is
   scaled by W because FSDP averages gradients, the gradient is already reduced (no sum_gradients),
   and a rank never runs a forward on its own (`forwards_alone`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from grpolab.algo.entropy import EntropyControl
from grpolab.algo.importance import logprob_mismatch
from grpolab.algo.logprobs import sequence_logprobs
from grpolab.algo.loss import grpo_loss
from grpolab.config.schema import Config, GRPOSection
from grpolab.models.loading import trainable_parameters
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Shards
from grpolab.rollout.types import Batch
from grpolab.train.objective import (
    EntropyStep,
    adapt_entropy,
    bonus_on,
    entropy_step,
    micro_batch_weights,
    objective_of,
)
from grpolab.train.optimizer import advance_schedule
from grpolab.train.precision import autocast_for
from grpolab.train.update_plan import UpdatePlan, micro_batch_size, padded_fraction, plan_update


@dataclass
class UpdateResult:
    metrics: dict[str, float]
    skipped_nonfinite: bool  # the gradient was NaN/inf: the optimizer step was skipped
    entropy_control: EntropyControl | None = None  # the entropy coefficient for the next step (bonus on)


@torch.no_grad()
def _forward_logprobs(
    model: Any, batch: Batch, parts: list[slice], temperature: float, share_prompt: bool
) -> list[torch.Tensor]:
    model.eval()
    return [
        sequence_logprobs(model, batch.select(part), temperature, share_prompt=share_prompt, entropy=False)[0]
        for part in parts
    ]


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
    logp = sequence_logprobs(model, first, temperature, share_prompt=share_prompt, entropy=False)[0]
    return _against_sampler(logp, first)


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


@contextmanager
def timed(seconds: dict[str, float], phase: str, device: torch.device) -> Iterator[None]:
    """Adds the block's wall time to seconds[phase]. On a GPU the kernels run asynchronously, so the
    block's end waits for them: otherwise one phase's kernels would be billed to the next."""
    started = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started


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
    seconds: dict[str, float] = {}  # time/reference (and the old policy's pass), time/policy, time/optimizer
    device = next(model.parameters()).device
    with timed(seconds, "reference", device):
        fixed = fixed_logprobs(model, plan, reference, shards, grpo.num_iterations, amp)
    passes = shards.training_passes(ctx, len(plan.parts))  # FSDP: the most micro-batches of any rank
    params = trainable_parameters(model)
    tally = Tally(compared=idle_mismatch(model, plan, cfg, shards, amp))
    control, bonus = entropy_control or EntropyControl(grpo.entropy_coef), bonus_on(grpo)
    skipped, grad_norm = False, 0.0
    for iteration in range(grpo.num_iterations):
        with timed(seconds, "policy", device):
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
        with timed(seconds, "optimizer", device):
            skipped |= not step_unless_nonfinite(optimizer, scheduler, grad_norm)
    model.eval()
    out = update_metrics(tally, plan, grpo, grad_norm, float(optimizer.param_groups[0]["lr"]))
    out.update({f"time/{phase}": value for phase, value in seconds.items()})
    return UpdateResult(out, skipped, control if bonus else None)
