"""The GRPO training loop. It composes the pieces (rollouts, rewards, advantages, update, evaluation,
checkpoints, tracking) and owns no math of its own; its cadence is written out in `loop`.

One step: B questions -> G rollouts each -> rewards r[B, G] -> advantages -> policy update
(`train/groups.py` refills groups without signal first, when DAPO dynamic sampling is on).
Validation at step 0 and every `eval.every_steps`; early stopping watches it and the best checkpoint
follows it; a checkpoint every `train.save_every`; SIGINT/SIGTERM save and stop. Build a Trainer
through the Python API (`grpolab.api.GRPOTrainer`), which is also what the command line does.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from grpolab.config.load import config_to_yaml
from grpolab.config.schema import Config
from grpolab.data.base import Example
from grpolab.data.order import QuestionOrder
from grpolab.eval.early_stopping import Decision, EarlyStopping
from grpolab.eval.evaluate import EvalResult, evaluate_examples
from grpolab.eval.evaluations import Evaluations
from grpolab.observe import Tracker
from grpolab.observe.null import NullTracker
from grpolab.parallel.distributed import DistContext
from grpolab.rollout.generators import sync_after_step
from grpolab.rollout.seeds import draw_seed
from grpolab.rollout.types import Rollout, collate
from grpolab.train.build import build_parts
from grpolab.train.checkpoint import BEST, keeps_end, load_checkpoint, prune_checkpoints, save_checkpoint, step_dir
from grpolab.train.export import write_model
from grpolab.train.groups import RoundSource, StepGroups, merged_scores, sample_records, step_sampling_params
from grpolab.train.health import RunHealth
from grpolab.train.inputs import RunInputs, seed_everything
from grpolab.train.optimizer import advance_schedule, build_optimizer, set_peak_lr
from grpolab.train.prefetch import Prefetch, Sampled, check_one_process, load_prefetched, sample_step
from grpolab.train.preflight import preflight
from grpolab.train.resume import check_resume, find_resume_point
from grpolab.train.run_lock import check_run_free, open_run_dir
from grpolab.train.signals import StopSignals, stop_signals
from grpolab.train.state import RunState, RunSummary, StopReason
from grpolab.train.step_metrics import LOCAL_METRIC_OPS, completion_statistics, reward_statistics
from grpolab.train.update import policy_update
from grpolab.train.warm_start import warm_start_trainer


class Trainer:
    def __init__(self, cfg: Config, inputs: RunInputs, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        # transformers 5 draws a progress bar on every save/load; checkpoints happen often here
        hf_logging.disable_progress_bar()
        if cfg.train.torch_threads:
            torch.set_num_threads(cfg.train.torch_threads)
        # a refused resume must not touch the run it names: check before anything is written
        self.resume_from = find_resume_point(cfg)
        self.resume_notes = check_resume(cfg, self.resume_from) if self.resume_from is not None else []
        check_run_free(self.resume_from, self.ctx)  # a run another process trains: refused before loading
        self.ctx.shard(list(range(cfg.train.questions_per_step)))  # fail now if B does not split evenly
        seed_everything(cfg.train.seed)
        self.splits = inputs.splits
        self.val = self.splits.val[: cfg.eval.size]
        self.device = self.ctx.device
        preflight(cfg)  # device, writable output, judge key and endpoint: before the model loads
        # after seeding: a fresh LoRA adapter is drawn from the run's seed
        self.parts = build_parts(cfg, inputs, self.ctx, prompts=[*self.splits.train, *self.val])
        self.rewards, self.eval_rewards = self.parts.rewards, self.parts.eval_rewards
        self.loaded, self.shards, self.reference_shards = (
            self.parts.loaded,
            self.parts.shards,
            self.parts.reference_shards,
        )
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.generator, self.rollouts = self.parts.generator, self.parts.rollouts
        check_one_process(cfg, ctx)
        self.prefetch = Prefetch(cfg.train.max_staleness)  # one-step-off rollouts (train/prefetch.py)
        self.health = RunHealth.from_config(cfg)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg)
        t = cfg.train
        self.state = RunState(
            QuestionOrder(len(self.splits.train), t.questions_per_step, t.seed),
            EarlyStopping(t.early_stopping_metric, t.patience, t.min_delta),
        )
        self.rewards.trainer_state = self.eval_rewards.trainer_state = lambda: self.state.trainer_state(t.max_steps)
        self.run_dir, self.run_lock = open_run_dir(cfg, self.resume_from, self.ctx)  # a new one: created now
        self.checkpoints_dir = self.run_dir / "checkpoints"
        self.last_saved_step = -1
        self.evaluations = Evaluations()  # seeded: each (weights, split) once
        self.signals = StopSignals(lambda message: self.tracker.warning(message))  # handlers: run()
        self.tracker: Tracker | NullTracker = NullTracker()  # the real one opens in run(): nothing written before

    # -- pieces of a step -------------------------------------------------------------------
    @contextmanager
    def reference(self) -> Iterator[Any]:
        """The frozen reference model, gathered under FSDP (LoRA: the policy with its adapter off)."""
        owner = self.reference_shards if self.loaded.reference is not None else self.shards
        with owner.gathered(), self.loaded.as_reference() as model:
            yield model

    def sample(self) -> Sampled:
        """The next step's groups, sampled and scored by the engine's current weights."""
        order, params = self.state.question_order, step_sampling_params(self.cfg)
        source = RoundSource(order, self.splits.train, self.rollouts, params, self.rewards, self.shards)
        return sample_step(self.cfg, self.ctx, source, version=self.state.step)

    def train_step(self) -> dict[str, float]:
        """Update the policy on the step's groups (sampled now, or during the previous step: train/prefetch.py)."""
        cfg, state, prefetch = self.cfg, self.state, self.prefetch
        ready = prefetch.pending or self.sample()
        self.signals.commit()  # from here on this step is finished (a signal stops after its checkpoint)
        prefetch.pending = None
        if prefetch.enabled and state.step + 1 < cfg.train.max_steps:
            prefetch.launch(self.sample, draw_seed())  # the engine holds the weights before this update
        groups, started = ready.groups, time.perf_counter()
        metrics = self.update(groups, sync=not prefetch.enabled)
        updating = time.perf_counter() - started
        if prefetch.enabled or ready.version != state.step:
            metrics.update(prefetch.settle((started, started + updating), state.step - ready.version))
            if prefetch.enabled and "train/skipped_empty" not in metrics:  # the engine never reloads mid-generation
                metrics.update(sync_after_step(self.generator, self.model))
        metrics.update(self.sampling_metrics(groups))
        state.num_tokens += metrics["tokens/total"]
        metrics["num_tokens"] = state.num_tokens  # cumulative, as TRL
        metrics["time/generation"] = ready.seconds["generation"]
        metrics["time/reward"] = ready.seconds["reward"]
        metrics["time/train_step"] = updating
        metrics["epoch"] = float(ready.epoch)
        state.add_rewards(groups.sampled_rewards)
        if groups.epoch_ends:
            self.log_epoch(ready.epoch)
        every = cfg.logging.sample_every
        if every and ((state.step + 1) % every == 0 or state.step == 0):
            records = sample_records(groups, cfg.logging.samples_per_step, self.describe_episode)
            self.tracker.log_samples(records, state.step + 1)
        return metrics

    def update(self, groups: StepGroups, sync: bool = True) -> dict[str, float]:
        """The policy update on the kept groups (every rank enters it, or none); its metrics over ranks.
        sync: load the new weights into a backend with its own copy (False: the caller does, later)."""
        cfg, ctx, state = self.cfg, self.ctx, self.state
        # every group dropped on this rank: an empty batch of the right shape (this rank must still
        # join the update's collectives when another rank has something to train)
        sampled = groups.sampled_rollouts
        batch = collate(groups.rollouts or sampled[:1], self.tokenizer.pad_token_id).select(slice(len(groups.rollouts)))
        if cfg.grpo.mask_truncated_completions and groups.rollouts:
            batch.completion_mask[torch.tensor([r.truncated for r in groups.rollouts])] = 0.0
        metrics: dict[str, float] = {}
        # a global decision: every rank must enter the update (and its collectives) or none
        self.signals.commit()  # the update changes the weights: from here on this step is finished
        if ctx.all_reduce_sum({"tokens": float(batch.completion_mask.sum())})["tokens"] > 0:
            reference = self.reference if self.loaded.has_reference else None  # None: no KL term
            result = policy_update(
                self.model, self.optimizer, self.scheduler, batch.to(self.device), groups.adv.to(self.device),
                cfg, reference, ctx, self.shards, state.entropy_control,
            )  # fmt: skip
            state.entropy_control = result.entropy_control
            metrics.update(result.metrics)
            if sync:
                metrics.update(sync_after_step(self.generator, self.model))  # vllm: engine = policy again
            if result.skipped_nonfinite:
                metrics["train/skipped_nonfinite"] = 1.0
                self.tracker.warning(f"step {state.step + 1}: non-finite gradient, optimizer step skipped")
        else:
            metrics["train/skipped_empty"] = 1.0
            advance_schedule(self.scheduler, cfg.grpo.num_iterations)  # the step still counts
        return ctx.reduce_metrics(
            metrics,
            float(batch.completion_mask.sum()),
            {**{k: "sum" for k in ("loss", "loss/policy", "loss/kl", "loss/entropy")}, "mismatch/logp_abs_max": "max"},
        )

    def sampling_metrics(self, groups: StepGroups) -> dict[str, float]:
        """What was sampled: rewards, completions (and agent episodes) over every rank, group spread."""
        cfg, sampled = self.cfg, groups.sampled_rollouts
        local: dict[str, float] = {**merged_scores(groups.rounds).metrics(), **completion_statistics(sampled)}
        if cfg.agent.enabled:
            from grpolab.rollout.agent_metrics import agent_metrics

            local.update(agent_metrics(sampled))
        metrics = self.ctx.reduce_metrics(local, float(len(sampled)), LOCAL_METRIC_OPS)
        metrics.update(reward_statistics(groups.sampled_rewards))
        metrics["reward/mean_group_std"] = groups.stats.mean_group_std
        metrics["frac_reward_zero_std"] = groups.stats.frac_reward_zero_std
        if cfg.grpo.filter_zero_std_groups:
            metrics["sampling/rounds"] = float(len(groups.rounds))
            metrics["sampling/kept_groups"] = float(groups.kept_groups)
        return metrics

    def describe_episode(self, rollout: Rollout) -> dict[str, Any]:
        if rollout.messages is None:
            return {}
        from grpolab.rollout.multi_turn import trained_spans

        return {"messages": rollout.messages, "spans": trained_spans(rollout, self.tokenizer)}

    def log_epoch(self, epoch: int) -> None:
        summary = self.state.close_epoch()
        self.tracker.log_metrics(summary, self.state.step + 1)
        self.tracker.info(
            f"epoch {epoch} done: accumulated reward {summary['epoch/accumulated_reward']:.1f}, "
            f"mean reward {summary['epoch/mean_reward']:.3f}, {summary['epoch/samples']:.0f} samples"
        )

    # -- evaluation and checkpoints -----------------------------------------------------------
    def evaluate(self, examples: list[Example], status: str | None = None) -> EvalResult:
        args = (evaluate_examples, self.cfg, self.rollouts, examples, self.eval_rewards, self.ctx, status)
        with self.shards.gathered():  # a no-op when not sharded; on every rank alike under FSDP
            split = "val" if examples is self.val else "final"
            return self.evaluations.once(self.state.step, self.state.best_step, split, *args)

    def final_examples(self) -> list[Example]:
        return self.splits.test if self.cfg.eval.final_split == "test" else self.val

    def validate(self) -> Decision:
        """Evaluate on val; early stopping and the best checkpoint follow the watched metric."""
        state = self.state
        metrics = self.evaluate(self.val).metrics("eval")
        value = metrics.get(state.stopper.metric)
        if value is None:
            raise KeyError(f"train.early_stopping_metric '{state.stopper.metric}' is not an eval metric")
        decision = state.stopper.update(value, state.step)
        state.record_validation(metrics)
        self.tracker.log_eval(metrics, state.step, f"validation at step {state.step}")
        if decision.improved:
            self.save(self.checkpoints_dir / BEST, training_state=False)
        return decision

    def save(self, target: Path, training_state: bool = True) -> None:
        """Rank 0 writes (every rank holds the same weights and optimizer state); the others wait.
        Under FSDP every rank first helps gather the full weights and optimizer state onto rank 0."""
        model_state = self.shards.full_state_dict()
        optimizer_state = self.shards.full_optimizer_state(self.optimizer) if training_state else None
        if self.ctx.is_main:
            save_checkpoint(
                target, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                trainer_state=self.state.state_dict(), config_yaml=config_to_yaml(self.cfg),
                is_peft=self.loaded.is_peft, tokenizer=self.tokenizer,
                model_state=model_state, optimizer_state=optimizer_state, training_state=training_state,
                prefetched=self.prefetch.pending if training_state else None,
            )  # fmt: skip
        self.ctx.barrier()

    def save_step(self, again: bool = False) -> None:
        """checkpoints/step-N (once per step; `again` rewrites it, e.g. after the final validation)."""
        if self.state.step == self.last_saved_step and not again:
            return
        self.save(step_dir(self.checkpoints_dir, self.state.step))
        self.last_saved_step = self.state.step
        if self.ctx.is_main:
            prune_checkpoints(self.checkpoints_dir, self.cfg.train.keep_last)

    def restore(self, ckpt: Path) -> None:
        """Continue from `ckpt`: weights, optimizer, scheduler, RNG and the run state."""
        saved = load_checkpoint(
            ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, shards=self.shards
        )
        set_peak_lr(self.optimizer, self.scheduler, self.cfg.optim.lr)  # optim.lr may have changed
        # RNG comes back as rank 0 saved it; offset it per rank as at the start of a run
        if self.ctx.enabled:
            torch.manual_seed(self.cfg.train.seed + self.ctx.rank + 1000 * int(saved["step"]))
        self.state.load_state_dict(saved)
        self.last_saved_step = self.state.step
        if not self.ctx.enabled:  # max_staleness=1 (one process): the next step's groups, as sampled
            self.prefetch.pending = load_prefetched(ckpt)
        sync_after_step(self.generator, self.model)  # vllm: the engine gets the resumed weights

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> RunSummary:
        started = time.perf_counter()
        cfg, state = self.cfg, self.state
        if self.ctx.is_main:
            self.tracker = Tracker(self.run_dir, cfg, total_steps=cfg.train.max_steps)
        if sharding := self.shards.describe(cfg.distributed.strategy):
            self.tracker.info(sharding)
        self.tracker.set_status("running", step=state.step, pid=os.getpid())
        try:
            with stop_signals(self.signals) as signals:
                with signals.phase(abortable=True):  # resume, or the before-training evaluation
                    self.start()
                stopped_by, why = self.loop(signals)
                stopped_by, why, after = signals.final_or_stop(self.finish, stopped_by, why, self.save_step)
        except BaseException as err:
            ended = "interrupted" if isinstance(err, KeyboardInterrupt) else "crashed"  # a signal
            self.tracker.set_status(ended, step=state.step, error=repr(err), signal=getattr(err, "signum", None))
            self.tracker.close({"status": ended, "error": repr(err)})
            self.run_lock.release()
            raise
        summary = RunSummary(
            self.run_dir, self.health.final_status(stopped_by.status), state.step, state.best_accuracy,
            state.best_step, state.last_reward, time.perf_counter() - started, state.before, after, why, stopped_by,
            self.health.degraded, signals.signum,
        )  # fmt: skip
        fields = {"best_accuracy": state.best_accuracy, "best_step": state.best_step, **self.health.status_fields()}
        self.tracker.set_status(summary.status, step=state.step, stop_reason=why, **fields)
        self.tracker.close({**summary.__dict__, "run_dir": str(self.run_dir), "stopped_by": stopped_by.value})
        self.run_lock.release()  # after the last word in status.json: a --resume may lock it now
        return summary

    def start(self) -> None:
        """Resume from the checkpoint, or evaluate the untrained model (before/after report, step 0)."""
        cfg, state = self.cfg, self.state
        if self.resume_from is not None:
            self.restore(self.resume_from)
            for note in self.resume_notes:
                self.tracker.info(note)
            self.tracker.info(f"resumed from {self.resume_from} at step {state.step}")
            return
        if cfg.train.resume:
            self.tracker.warning("train.resume=auto: no checkpoint of this run name found, starting fresh")
        split = cfg.eval.final_split
        if self.val:
            state.before = self.evaluate(self.final_examples(), f"before training: evaluating {split}").metrics(split)
            self.tracker.info(f"before training: {split} accuracy {state.before[f'{split}/accuracy']:.1%}")
        if cfg.warm_start.sft_steps:  # supervised steps on gold agent traces, after "before" (train/warm_start.py)
            warm_start_trainer(self)
        if not self.val:
            return self.tracker.info("no eval_dataset: training without evaluation or before/after report")
        self.validate()  # the step-0 baseline: the first best

    def loop(self, signals: StopSignals) -> tuple[StopReason, str]:
        cfg, state = self.cfg, self.state
        max_steps, eval_every, save_every = cfg.train.max_steps, cfg.eval.every_steps, cfg.train.save_every
        while state.step < max_steps:
            metrics = signals.step_or_drop(self.train_step, state, abortable=not self.ctx.enabled)
            if metrics is None:  # a signal before the step's update dropped it (state as before it)
                self.save_step()
                return StopReason.SIGNAL, f"{signals.received} in step {state.step + 1}: dropped, saved {state.step}"
            state.step += 1
            state.last_reward = metrics.get("reward", state.last_reward)
            if warning := self.health.observe(state.step, metrics):  # raises if a reward scored nothing
                self.tracker.warning(warning)
            if state.step % cfg.logging.log_every == 0 or state.step == max_steps:
                self.tracker.log_metrics(metrics, state.step)
            self.tracker.advance(state.step)
            if not math.isfinite(metrics.get("loss", 0.0)):
                self.tracker.warning(f"step {state.step}: loss is not finite ({metrics.get('loss')})")
            # validate before saving, so a checkpoint holds this step's evaluation and a run resumed
            # from it does not skip one; the last step's validation is finish()'s
            if eval_every and state.step % eval_every == 0 and state.step < max_steps and self.val:
                decision = self.validate()
                if decision.should_stop:
                    return StopReason.EARLY_STOPPING, decision.reason
            if save_every and state.step % save_every == 0:
                self.save_step()
            if signals.any_rank(self.ctx):
                self.save_step()
                return StopReason.SIGNAL, f"{signals.received} received, checkpoint saved at step {state.step}"
        return StopReason.MAX_STEPS, f"reached train.max_steps={max_steps}"

    def finish(self, stopped_by: StopReason, why: str) -> dict[str, float]:
        """Final validation, last checkpoint, the best weights exported and evaluated on the final split."""
        state = self.state
        self.tracker.info(f"stopping: {why}")
        if stopped_by is StopReason.SIGNAL:
            # No final validation or export: a validation here would enter early stopping and the
            # best checkpoint, and the resumed run would then differ from one never interrupted.
            self.tracker.info(f"interrupted at step {state.step}: `grpolab train ... --resume` continues it")
            return {}
        if self.val and (not state.history or state.history[-1]["step"] != state.step):
            self.validate()
        if keeps_end(self.cfg.train.end_checkpoint, self.model, self.tracker.info):
            self.save_step(again=True)
        best = self.checkpoints_dir / BEST
        if best.is_dir() and state.best_step != state.step:
            load_checkpoint(
                best, model=self.model, optimizer=None, scheduler=None, restore_rng=False, shards=self.shards
            )
            self.evaluations.loaded_step = state.best_step
            sync_after_step(self.generator, self.model)  # vllm: the final evaluation samples the best weights
            self.tracker.info(f"exporting the best model (step {state.best_step}), not the last")
        self.save_model(self.run_dir / "final")
        if not self.val:
            return {}
        split = self.cfg.eval.final_split
        after = self.evaluate(self.final_examples()).metrics(split)
        key = f"{split}/accuracy"
        self.tracker.info(
            f"{split} accuracy: before {state.before.get(key, float('nan')):.1%} -> after {after[key]:.1%}"
        )
        self.tracker.log_metrics({f"final/{k}": v for k, v in after.items()}, state.step)
        return after

    def save_model(self, directory: Path) -> None:
        """The model as it is now (a LoRA adapter, or full weights) and its tokenizer, loadable with
        from_pretrained; every rank must call it under FSDP, rank 0 writes."""
        model_state = self.shards.full_state_dict()
        if self.ctx.is_main:
            write_model(self.model, self.tokenizer, directory, model_state)  # atomic, like the checkpoints
