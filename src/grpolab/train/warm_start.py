"""A warm start before GRPO: supervised fine-tuning on gold tool-use traces, through RL's own masking.

Why: a small model that never writes a tool call gives GRPO nothing to reinforce (SmolLM2-135M writes
a `<tool_call>` in 0 of 32 samples; docs/experiments.md). A few dozen supervised steps on scripted
episodes teach the call format and reading the result; GRPO then trains on the model's own episodes.

How: the traces are real episodes. `run_agent_rollouts` runs each training row's environment with a
`TeacherGenerator` (rollout/teacher.py) that answers with the row's gold turns (envs/gold_turns.py),
so prompt, observation deltas and completion_mask are exactly those of an RL rollout in masked mode:
the teacher's turns are trained, tool output and template glue are not. The loss is the mean
negative log-likelihood of the mask-1 tokens, from `sequence_logprobs` (the log-probs the GRPO loss
uses), over the trainable parameters only (LoRA: the adapter).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from grpolab.algo.logprobs import sequence_logprobs
from grpolab.envs.env import EnvFactory
from grpolab.envs.gold_turns import GoldTurns
from grpolab.errors import UserError
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.generators import sync_after_step
from grpolab.rollout.multi_turn import run_agent_rollouts
from grpolab.rollout.teacher import TeacherGenerator
from grpolab.rollout.types import Batch, Rollout, collate
from grpolab.train.precision import autocast_for


class WarmStartError(UserError, ValueError):
    """A warm start that cannot run as configured (no scriptable row, several processes)."""


@dataclass(frozen=True)
class WarmStartPlan:
    """steps optimizer steps of batch_size traces each, at a constant lr, over `examples` traces."""

    steps: int
    lr: float = 1e-4
    batch_size: int = 8
    examples: int = 256
    seed: int = 0


@dataclass
class WarmStartReport:
    steps: int
    traces: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # one per step


def teacher_traces(
    tokenizer: Any,
    env_factory: EnvFactory,
    rows: Sequence[dict[str, Any]],
    gold_turns: GoldTurns,
    stop_id: int,
    *,
    max_turns: int,
    max_total_tokens: int,
    max_new_tokens: int,
) -> list[Rollout]:
    """One masked-mode episode per row the gold-turns function can script, played by the teacher;
    only episodes that ended on their own (the answer given within the limits) are kept."""
    scripted = [(dict(row), turns) for row in rows if (turns := gold_turns(dict(row)))]
    if not scripted:
        return []
    teacher = TeacherGenerator(tokenizer, [turns for _, turns in scripted], stop_id)
    rollouts = run_agent_rollouts(
        teacher, tokenizer, env_factory, [row for row, _ in scripted],
        SamplingParams(max_new_tokens=max_new_tokens, greedy=True), max_turns, max_total_tokens, mode="masked",
    )  # fmt: skip
    return [r for r in rollouts if r.info.get("stop_reason") == "done"]


def sft_loss(model: Any, batch: Batch) -> torch.Tensor:
    """Mean negative log-likelihood of the completion tokens with mask 1 (a scalar with a gradient).

    batch: collated traces, completion_mask [N, C]; log-probs at temperature 1 (the model's own).
    """
    logp, _ = sequence_logprobs(model, batch, temperature=1.0, entropy=False)  # [N, C]
    mask = batch.completion_mask
    return -(logp * mask).sum() / mask.sum().clamp(min=1.0)


def train_on_traces(
    model: Any,
    traces: Sequence[Rollout],
    plan: WarmStartPlan,
    pad_id: int,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
    amp: AbstractContextManager[Any] | None = None,
) -> WarmStartReport:
    """`plan.steps` AdamW steps (constant lr, gradient norm clipped at 1) on batches drawn in turn from
    a seeded shuffle of the traces; only parameters with requires_grad change. amp: the context the
    forwards run in (train.precision's autocast; the backward runs outside it)."""
    if not traces:
        raise WarmStartError("warm_start: no trace to train on (warm_start.gold_turns scripted no training row)")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=0.0)
    order = list(range(len(traces)))
    rng = random.Random(plan.seed)
    rng.shuffle(order)
    report = WarmStartReport(steps=0, traces=len(traces), seconds=0.0)
    started, cursor, was_training = time.perf_counter(), 0, model.training
    model.train()
    try:
        for step in range(1, plan.steps + 1):
            if cursor + plan.batch_size > len(order):  # a new epoch: reshuffle
                rng.shuffle(order)
                cursor = 0
            picked = [traces[i] for i in order[cursor : cursor + plan.batch_size]]
            cursor += plan.batch_size
            with amp if amp is not None else contextlib.nullcontext():
                loss = sft_loss(model, collate(picked, pad_id).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            report.losses.append(float(loss.detach()))
            report.steps = step
            if log is not None and (step % 10 == 0 or step == plan.steps):
                log(f"warm start step {step}/{plan.steps}: loss {report.losses[-1]:.4f}")
    finally:
        model.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    report.seconds = time.perf_counter() - started
    return report


def warm_start_policy(
    cfg: Any,
    sampler: Any,
    model: Any,
    train_examples: Sequence[Any],
    stop_id: int,
    device: torch.device | str,
    log: Callable[[str], None] | None = None,
) -> WarmStartReport:
    """The configured warm start (cfg.warm_start, a WarmStartConfig) on the run's policy: the first
    `examples` training questions, as the run's RolloutSampler turns them into environment rows
    (same system prompt and question), played by the teacher, then `steps` SFT steps. The caller
    syncs a generation engine that holds its own weights (vLLM) afterwards."""
    from grpolab.envs.gold_turns import load_gold_turns

    ws, agent = cfg.warm_start, cfg.agent
    rows = [sampler.agent_row(example) for example in train_examples[: ws.questions]]
    traces = teacher_traces(
        sampler.tokenizer, sampler.env_factory, rows, load_gold_turns(ws.gold_turns), stop_id,
        max_turns=agent.max_turns, max_total_tokens=agent.max_total_tokens,
        max_new_tokens=cfg.generation.max_new_tokens,
    )  # fmt: skip
    if log is not None:
        log(f"warm start: {len(traces)} gold traces from {len(rows)} training questions, {ws.sft_steps} steps")
    plan = WarmStartPlan(ws.sft_steps, ws.sft_lr, ws.traces_per_step, ws.questions, cfg.train.seed)
    amp = autocast_for(cfg, model)  # a LoRA base stored in bf16 (train/placement.py) needs it, as GRPO's passes do
    return train_on_traces(model, traces, plan, sampler.tokenizer.pad_token_id, device, log, amp)


def warm_start_trainer(trainer: Any) -> None:
    """`grpolab train` with warm_start.sft_steps > 0: after the untrained model's evaluation (the run's
    "before") and before the step-0 validation, so the run reports before -> warm start + GRPO."""
    if trainer.ctx.enabled:
        raise WarmStartError("warm_start runs in one process: warm-start first, then train under torchrun")
    report = warm_start_policy(
        trainer.cfg, trainer.rollouts, trainer.model, trainer.splits.train, trainer.loaded.stop_ids[0],
        trainer.device, trainer.tracker.info,
    )  # fmt: skip
    sync_after_step(trainer.generator, trainer.model)  # vLLM: the engine gets the warm-started weights
    trainer.evaluations.weights_changed()  # step 0's weights are no longer the untrained ones evaluated
    metrics = {"steps": report.steps, "traces": report.traces, "loss": report.losses[-1], "seconds": report.seconds}
    trainer.tracker.log_metrics({f"warm_start/{k}": float(v) for k, v in metrics.items()}, 0)
