"""The GRPO training loop. It composes the pieces (tasks, rollouts, rewards, advantages, update,
evaluation, checkpoints, tracking) and owns no math of its own.

One step: B questions -> G rollouts each -> rewards r[B, G] -> advantages -> policy update.
Every `eval.every_steps` (and at step 0): validation; early stopping watches it and the best
checkpoint follows it. `run_training(cfg)` is the whole run, from config to summary.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from grpolab.algo.advantages import group_advantages
from grpolab.config.schema import Config, RewardsConfig, RewardSpec
from grpolab.data import build_splits
from grpolab.data.base import Example, Splits
from grpolab.data.order import QuestionSampler
from grpolab.eval.evaluate import EvalResult, evaluate
from grpolab.models.loading import LoadedModel, load_model, pick_device
from grpolab.observe import Tracker
from grpolab.observe.null import NullTracker
from grpolab.parallel.distributed import DistContext, failure_guard
from grpolab.parallel.sharding import (
    ShardedModel,
    accelerate_fsdp_requested,
    fsdp_settings,
    refuse_deepspeed,
    shard_model,
)
from grpolab.rewards import RewardInputs, RewardScores, build_rewards
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.generators import build_generator, sync_after_step
from grpolab.rollout.sampler import RolloutSampler
from grpolab.rollout.types import Rollout, collate
from grpolab.train.checkpoint import latest_checkpoint
from grpolab.train.control import TrainingControl
from grpolab.train.schedule import build_optimizer
from grpolab.train.step_metrics import LOCAL_METRIC_OPS, completion_statistics, reward_statistics, reward_tensor
from grpolab.train.update import policy_update


@dataclass
class RunSummary:
    run_dir: Path
    status: str  # finished | stopped_early | interrupted
    steps: int
    best_accuracy: float | None
    best_step: int | None
    final_reward: float | None
    seconds: float
    before: dict[str, float] = field(default_factory=dict)  # final-split metrics before training
    after: dict[str, float] = field(default_factory=dict)  # final-split metrics of the exported model
    stop_reason: str = ""


def evaluation_rewards(cfg: Config) -> RewardsConfig:
    """The training rewards, plus the correctness and format rewards that evaluation reads (weight 0,
    so they add to the breakdown but not to the reward being optimised)."""
    functions = list(cfg.rewards.functions)
    labels = {spec.label for spec in functions}
    for name in (cfg.eval.correctness_reward, cfg.eval.format_reward):
        if name and name not in labels:
            functions.append(RewardSpec(name=name, weight=0.0))
            labels.add(name)
    return RewardsConfig(functions=functions, on_error=cfg.rewards.on_error)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def new_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = Path(cfg.train.output_dir) / cfg.train.run_name / stamp
    suffix = 1
    while run_dir.exists():  # two runs started in the same second (sweeps, tests)
        run_dir = Path(cfg.train.output_dir) / cfg.train.run_name / f"{stamp}_{suffix}"
        suffix += 1
    return run_dir


def find_resume_point(cfg: Config) -> Path | None:
    if cfg.train.resume in (None, ""):
        return None
    if cfg.train.resume != "auto":
        return Path(cfg.train.resume)
    runs = sorted((Path(cfg.train.output_dir) / cfg.train.run_name).glob("*/checkpoints"))
    for checkpoints in reversed(runs):
        found = latest_checkpoint(checkpoints)
        if found is not None:
            return found
    return None


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path | None = None, ctx: DistContext | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or DistContext.single(pick_device(cfg.train.device))
        # transformers 5 draws a progress bar on every save/load; checkpoints happen often here
        hf_logging.disable_progress_bar()
        if cfg.train.torch_threads:
            torch.set_num_threads(cfg.train.torch_threads)
        self.resume_from = find_resume_point(cfg)
        chosen = run_dir or (self.resume_from.parents[1] if self.resume_from else new_run_dir(cfg))
        self.run_dir: Path = self.ctx.broadcast_object(chosen)  # clocks of ranks may differ by a second
        self.ctx.shard(list(range(cfg.train.questions_per_step)))  # fail now if B does not split evenly
        seed_everything(cfg.train.seed)
        self.rewards = build_rewards(cfg.rewards)
        self.eval_rewards = build_rewards(evaluation_rewards(cfg))
        self.splits: Splits = build_splits(cfg.data, cfg.data.seed)
        self.val = self.splits.val[: cfg.eval.size]
        self.device = self.ctx.device
        self.loaded: LoadedModel = load_model(cfg.model, beta=cfg.grpo.beta, device=self.device)
        self.model = self.loaded.model
        self.ctx.sync_parameters(self.model)  # a fresh LoRA adapter is random: start every rank from rank 0's
        if self.loaded.reference is not None:
            self.ctx.sync_parameters(self.loaded.reference)
        self.sharded: ShardedModel | None = None
        self.sharded_reference: ShardedModel | None = None
        if self.ctx.enabled and (cfg.distributed.strategy == "fsdp" or accelerate_fsdp_requested()):
            settings = fsdp_settings()
            self.sharded = shard_model(self.model, self.ctx, cfg.distributed, settings)
            if self.loaded.reference is not None:
                self.sharded_reference = shard_model(self.loaded.reference, self.ctx, cfg.distributed, settings)
        # same questions on every rank (the sampler's own seed), different rollouts per rank
        torch.manual_seed(cfg.train.seed + self.ctx.rank)
        self.tokenizer = self.loaded.tokenizer
        self.generator = build_generator(
            cfg, self.model, self.tokenizer.pad_token_id, self.loaded.stop_ids, seed=cfg.train.seed + self.ctx.rank
        )
        self.rollouts = RolloutSampler(cfg, self.generator, self.tokenizer, self.loaded.stop_ids)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg)
        self.sampler = QuestionSampler(len(self.splits.train), cfg.train.questions_per_step, cfg.train.seed)
        self.tracker: Tracker | NullTracker = (
            Tracker(self.run_dir, cfg, total_steps=cfg.train.max_steps) if self.ctx.is_main else NullTracker()
        )
        if self.sharded is not None:
            self.tracker.info(f"FSDP: {self.sharded.describe()} over {self.ctx.world_size} ranks")
        elif cfg.distributed.strategy == "fsdp":
            self.tracker.info("distributed.strategy=fsdp with one process: nothing to shard, training unsharded")
        self.control = TrainingControl(self, self.run_dir / "checkpoints")
        self.step = 0
        self._stop_signal: str | None = None

    # -- FSDP-aware access to the weights ----------------------------------------------------
    def gathered(self) -> AbstractContextManager[Any]:
        """The whole policy on this rank (FSDP: all-gathered once) for generation and no-grad passes."""
        return self.sharded.gathered() if self.sharded is not None else nullcontext(self.model)

    @contextmanager
    def reference(self) -> Iterator[Any]:
        """The frozen reference model, gathered under FSDP (LoRA: the policy with its adapter off)."""
        owner = self.sharded_reference if self.loaded.reference is not None else self.sharded
        with owner.gathered() if owner is not None else nullcontext(), self.loaded.as_reference() as model:
            yield model

    # -- pieces of a step -------------------------------------------------------------------
    def sampling_params(self) -> SamplingParams:
        g = self.cfg.generation
        return SamplingParams(
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            top_k=g.top_k,
            num_samples=self.cfg.grpo.num_generations,
            repetition_penalty=g.repetition_penalty,
        )

    def score(self, examples: list[Example], rollouts: list[Rollout]) -> RewardScores:
        rows = [examples[r.question_index].row() for r in rollouts]
        return self.rewards.score(
            RewardInputs(
                prompts=[examples[r.question_index].question for r in rollouts],
                completions=[r.text for r in rollouts],
                completion_ids=[r.completion_ids for r in rollouts],
                rows=rows,
                trajectories=[r.messages or [] for r in rollouts] if rollouts and rollouts[0].messages else None,
                completion_lengths=[sum(r.completion_mask) for r in rollouts],
            )
        )

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        group = cfg.grpo.num_generations
        indices, epoch_ends = self.sampler.next_batch()
        ctx = self.ctx
        examples = [self.splits.train[i] for i in ctx.shard(indices)]  # whole groups per rank
        started = time.perf_counter()
        with self.gathered():
            rollouts = self.rollouts.sample(examples, self.sampling_params())
        generated = time.perf_counter()
        scores = self.score(examples, rollouts)
        local_rewards = reward_tensor(scores, len(examples), group)  # [B/W, G]
        # group statistics over the whole batch (exact for scale_rewards=batch too), then our rows
        rewards = torch.cat(ctx.gather_objects(local_rewards))  # [B, G]
        adv_all, adv_stats = group_advantages(rewards, cfg.grpo.scale_rewards)  # [B, G]
        adv = adv_all[ctx.rank * len(examples) : (ctx.rank + 1) * len(examples)]  # [B/W, G]
        scored = time.perf_counter()

        batch = collate(rollouts, self.tokenizer.pad_token_id)
        flat_adv = adv.reshape(-1)  # [B*G], row k*G + g as in rollouts
        if cfg.grpo.mask_truncated_completions:
            truncated = torch.tensor([r.truncated for r in rollouts])
            batch.completion_mask[truncated] = 0.0
        if cfg.grpo.filter_zero_std_groups:
            keep = (adv.abs().sum(dim=1) > 0).repeat_interleave(group)
            batch, flat_adv = batch.select(keep), flat_adv[keep]
        metrics: dict[str, float] = {}
        # a global decision: every rank must enter the update (and its collectives) or none
        trainable = ctx.all_reduce_sum({"tokens": float(batch.completion_mask.sum()) if len(batch) else 0.0})
        if trainable["tokens"] > 0:
            result = policy_update(
                self.model,
                self.optimizer,
                self.scheduler,
                batch.to(self.device),
                flat_adv.to(self.device),
                cfg,
                self.reference if cfg.grpo.beta > 0 else None,
                ctx,
                self.sharded,
            )
            metrics.update(result.metrics)
            metrics.update(sync_after_step(self.generator, self.model))  # vllm: engine = policy again
            if result.skipped_nonfinite:
                metrics["train/skipped_nonfinite"] = 1.0
                self.tracker.warning(f"step {self.step + 1}: non-finite gradient, optimizer step skipped")
        else:
            metrics["train/skipped_empty"] = 1.0
        updated = time.perf_counter()

        metrics = ctx.reduce_metrics(
            metrics,
            float(batch.completion_mask.sum()),
            {**{k: "sum" for k in ("loss", "loss/policy", "loss/kl")}, "mismatch/logp_abs_max": "max"},
        )
        local: dict[str, float] = {**scores.metrics(), **completion_statistics(rollouts)}
        if cfg.agent.enabled:
            from grpolab.rollout.agent_metrics import agent_metrics

            local.update(agent_metrics(rollouts))
        metrics.update(ctx.reduce_metrics(local, float(len(rollouts)), LOCAL_METRIC_OPS))
        metrics.update(reward_statistics(rewards))
        metrics["reward_std"] = adv_stats.reward_std
        metrics["frac_reward_zero_std"] = adv_stats.frac_reward_zero_std
        metrics["num_tokens"] = metrics["tokens/total"]
        metrics["time/generation"] = generated - started
        metrics["time/reward"] = scored - generated
        metrics["time/train_step"] = updated - scored
        metrics["epoch"] = float(self.sampler.epoch)
        self.control.record_rewards(rewards, epoch_ends)
        if ctx.is_main:
            self.log_samples(examples, rollouts, scores, flat_adv)
        return metrics

    def log_samples(
        self, examples: list[Example], rollouts: list[Rollout], scores: RewardScores, adv: torch.Tensor
    ) -> None:
        every = self.cfg.logging.sample_every
        if not every or ((self.step + 1) % every and self.step != 0):
            return
        records: list[dict[str, Any]] = []
        for i, rollout in enumerate(rollouts[: self.cfg.logging.samples_per_step]):
            example = examples[rollout.question_index]
            records.append(
                {
                    "prompt": example.question,
                    "completion": rollout.text,
                    "answer": example.answer,
                    "category": example.category,
                    "rewards": scores.breakdown(i),
                    "reward": scores.total[i],
                    "advantage": float(adv[i]),
                    "truncated": rollout.truncated,
                }
            )
            if rollout.messages is not None:
                from grpolab.rollout.multi_turn import trained_spans

                records[-1]["messages"] = rollout.messages
                records[-1]["spans"] = trained_spans(rollout, self.tokenizer)
        self.tracker.log_samples(records, self.step + 1)

    def evaluate(self, examples: list[Example]) -> EvalResult:
        with self.gathered():
            return self._evaluate(examples)

    def _evaluate(self, examples: list[Example]) -> EvalResult:
        e = self.cfg.eval
        return evaluate(
            self.generator,
            self.tokenizer,
            examples,
            self.rollouts.prompt_ids,
            self.eval_rewards,
            max_new_tokens=self.cfg.generation.max_new_tokens,
            batch_size=e.batch_size,
            pass_k=e.pass_k,
            num_samples=e.num_samples or max(e.pass_k, default=0),
            temperature=e.temperature,
            top_p=self.cfg.generation.top_p,
            format_reward=e.format_reward,
            correctness_reward=e.correctness_reward,
            stop_ids=self.loaded.stop_ids,
            rollout_fn=self.rollouts.sample,
            seed=self.cfg.train.seed,
            ctx=self.ctx,
        )

    # -- the run ----------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # first signal: finish the step, save, exit cleanly; a second one: stop now
        if self._stop_signal is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without saving")
        self._stop_signal = signal.Signals(signum).name
        self.tracker.warning(f"{self._stop_signal} received: saving a checkpoint after this step (again to abort)")

    def run(self) -> RunSummary:
        started = time.perf_counter()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.tracker.set_status("running", step=0, pid=os.getpid())
        try:
            if self.resume_from is not None:
                self.control.resume(self.resume_from)
                self.tracker.info(f"resumed from {self.resume_from} at step {self.step}")
                sync_after_step(self.generator, self.model)  # vllm: the engine gets the resumed weights
            else:
                if self.cfg.train.resume:
                    self.tracker.warning("train.resume=auto: no checkpoint of this run name found, starting fresh")
                self.control.baseline()
            reason = self._loop()
            status = {"signal": "interrupted", "early": "stopped_early"}.get(reason.split(":")[0], "finished")
            after = self.control.finish(reason)
        except BaseException as err:
            self.tracker.set_status("crashed", step=self.step, error=repr(err))
            self.tracker.close({"status": "crashed", "error": repr(err)})
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        summary = RunSummary(
            run_dir=self.run_dir,
            status=status,
            steps=self.step,
            best_accuracy=self.control.best_accuracy,
            best_step=self.control.best_step,
            final_reward=self.control.last_reward,
            seconds=time.perf_counter() - started,
            before=self.control.before,
            after=after,
            stop_reason=reason,
        )
        self.tracker.set_status(status, step=self.step, stop_reason=reason, **self.control.status_fields())
        self.tracker.close({**summary.__dict__, "run_dir": str(self.run_dir)})
        return summary

    def _loop(self) -> str:
        cfg = self.cfg
        while self.step < cfg.train.max_steps:
            metrics = self.train_step()
            self.step += 1
            if self.step % cfg.logging.log_every == 0 or self.step == cfg.train.max_steps:
                self.tracker.log_metrics(metrics, self.step)
            self.tracker.advance(self.step)
            if not math.isfinite(metrics.get("loss", 0.0)):
                self.tracker.warning(f"step {self.step}: loss is not finite ({metrics.get('loss')})")
            decision = self.control.after_step(metrics)
            if decision:
                return decision
            if self.ctx.all_reduce_sum({"stop": float(self._stop_signal is not None)})["stop"] > 0:
                self._stop_signal = self._stop_signal or "SIGTERM (another rank)"
                self.control.save_periodic(force=True)
                return f"signal: {self._stop_signal} received, checkpoint saved at step {self.step}"
        return f"max_steps: reached train.max_steps={cfg.train.max_steps}"


def run_training(cfg: Config) -> RunSummary:
    """The whole run. Under torchrun / accelerate launch, one call per rank (see docs/distributed.md)."""
    refuse_deepspeed()  # before any process group or model
    ctx = DistContext.from_env(cfg.distributed, cfg.train.device)
    try:
        with failure_guard(ctx):
            return Trainer(cfg, ctx=ctx).run()
    finally:
        ctx.close()
