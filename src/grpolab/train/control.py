"""Training control: when to evaluate, when to stop, what to save, and how to pick up again.

- Validation at step 0 (the baseline) and every `eval.every_steps`; early stopping watches
  `train.early_stopping_metric` with `train.patience` evaluations of patience.
- The best checkpoint is rewritten whenever the watched metric improves; at the end the run
  exports the best model ("final" = best) and keeps the last checkpoint too.
- Everything a resumed run needs (step, sampler position, early-stopping state, metric history,
  epoch accumulators, RNG) goes into the checkpoint, so k steps + resume + N-k steps replay the
  uninterrupted run exactly (CPU, same seed).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from grpolab.config.load import config_to_yaml
from grpolab.eval.early_stopping import EarlyStopping
from grpolab.train.checkpoint import (
    BEST,
    load_checkpoint,
    prune_checkpoints,
    resume_conflict,
    save_checkpoint,
    step_dir,
)
from grpolab.train.export import write_model

if TYPE_CHECKING:
    from grpolab.train.trainer import Trainer


class ResumeError(ValueError):
    pass


def _dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


class TrainingControl:
    def __init__(self, trainer: Trainer, checkpoints_dir: Path) -> None:
        self.trainer = trainer
        self.cfg = trainer.cfg
        self.checkpoints_dir = checkpoints_dir
        self.stopper = EarlyStopping(
            self.cfg.train.early_stopping_metric, self.cfg.train.patience, self.cfg.train.min_delta
        )
        self.history: list[dict[str, float]] = []  # eval metrics per evaluation, with "step"
        self.before: dict[str, float] = {}
        self.epoch_sum = 0.0
        self.epoch_count = 0
        self.last_reward: float | None = None
        self.last_saved_step = -1

    # -- state ------------------------------------------------------------------------------
    @property
    def best_accuracy(self) -> float | None:
        return self.stopper.best

    @property
    def best_step(self) -> int | None:
        return self.stopper.best_step

    def status_fields(self) -> dict[str, Any]:
        return {"best_accuracy": self.best_accuracy, "best_step": self.best_step}

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.trainer.step,
            "sampler": self.trainer.sampler.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "history": self.history,
            "before": self.before,
            "epoch_sum": self.epoch_sum,
            "epoch_count": self.epoch_count,
            "last_reward": self.last_reward,
        }

    def _save(self, target: Path) -> None:
        """Rank 0 writes (every rank holds the same weights and optimizer state); the others wait.
        Under FSDP every rank first helps gather the full weights and optimizer state onto rank 0."""
        t = self.trainer
        model_state = optimizer_state = None
        if t.sharded is not None:
            model_state = t.sharded.full_state_dict()
            optimizer_state = t.sharded.full_optimizer_state(t.optimizer)
        if t.ctx.is_main:
            self._write(target, model_state, optimizer_state)
        t.ctx.barrier()

    def _write(self, target: Path, model_state: dict[str, Any] | None, optimizer_state: dict[str, Any] | None) -> None:
        t = self.trainer
        save_checkpoint(
            target,
            model=t.model,
            optimizer=t.optimizer,
            scheduler=t.scheduler,
            trainer_state=self.state_dict(),
            config_yaml=config_to_yaml(self.cfg),
            is_peft=t.loaded.is_peft,
            tokenizer=t.tokenizer,
            model_state=model_state,
            optimizer_state=optimizer_state,
        )

    def save_periodic(self, force: bool = False, again: bool = False) -> None:
        """Save step-N when due (or `force`); `again` rewrites it even if this step was saved already,
        e.g. after the final validation, so the checkpoint holds that evaluation too."""
        step = self.trainer.step
        every = self.cfg.train.save_every
        if (step == self.last_saved_step and not again) or not (force or (every and step % every == 0)):
            return
        self._save(step_dir(self.checkpoints_dir, step))
        self.last_saved_step = step
        if self.trainer.ctx.is_main:
            prune_checkpoints(self.checkpoints_dir, self.cfg.train.keep_last)

    # -- evaluation -------------------------------------------------------------------------
    def validate(self) -> None:
        t = self.trainer
        result = t.evaluate(t.val)
        metrics = result.metrics("eval")
        value = metrics.get(self.stopper.metric)
        if value is None:
            raise KeyError(f"train.early_stopping_metric '{self.stopper.metric}' is not an eval metric")
        decision = self.stopper.update(value, t.step)
        accuracies = [h["eval/accuracy"] for h in self.history[-2:]] + [metrics["eval/accuracy"]]
        metrics["eval/accuracy_moving_avg"] = statistics.fmean(accuracies)
        metrics["eval/best_accuracy"] = float(self.stopper.best or 0.0)
        self.history.append({"step": float(t.step), **metrics})
        t.tracker.log_eval(metrics, t.step, f"validation at step {t.step}")
        if decision.improved:
            self._save(self.checkpoints_dir / BEST)
        self._stop_reason = decision.reason if decision.should_stop else ""

    def baseline(self) -> None:
        t = self.trainer
        split = self.cfg.eval.final_split
        result = t.evaluate(t.splits.test if split == "test" else t.val)
        self.before = result.metrics(f"{split}")
        t.tracker.info(f"before training: {split} accuracy {self.before[f'{split}/accuracy']:.1%}")
        self.validate()

    def after_step(self, metrics: dict[str, float]) -> str | None:
        every = self.cfg.eval.every_steps
        step = self.trainer.step
        self.last_reward = metrics.get("reward", self.last_reward)
        stop = None
        # validate before saving, so a checkpoint holds this step's evaluation and a run resumed
        # from it does not skip one
        if every and step % every == 0 and step < self.cfg.train.max_steps:
            self.validate()
            stop = f"early: {self._stop_reason}" if self._stop_reason else None
        if stop is None:
            self.save_periodic()
        return stop

    def record_rewards(self, rewards: torch.Tensor, epoch_ends: bool) -> None:
        scored = rewards[~torch.isnan(rewards)]
        self.epoch_sum += float(scored.sum())
        self.epoch_count += int(scored.numel())
        if not epoch_ends:
            return
        t = self.trainer
        mean = self.epoch_sum / max(self.epoch_count, 1)
        epoch = t.sampler.epoch
        t.tracker.log_metrics(
            {
                "epoch/accumulated_reward": self.epoch_sum,
                "epoch/mean_reward": mean,
                "epoch/samples": self.epoch_count,
            },
            t.step + 1,
        )
        t.tracker.info(
            f"epoch {epoch} done: accumulated reward {self.epoch_sum:.1f}, mean reward {mean:.3f}, "
            f"{self.epoch_count} samples"
        )
        self.epoch_sum, self.epoch_count = 0.0, 0

    # -- end and resume ---------------------------------------------------------------------
    def finish(self, reason: str) -> dict[str, float]:
        """Final validation, last checkpoint, load the best weights, export them, final-split metrics."""
        t = self.trainer
        t.tracker.info(f"stopping: {reason}")
        if not self.history or self.history[-1]["step"] != t.step:
            self.validate()
        self.save_periodic(force=True, again=True)
        best = self.checkpoints_dir / BEST
        if best.is_dir() and self.best_step != t.step:
            load_checkpoint(best, model=t.model, optimizer=None, scheduler=None, restore_rng=False, sharded=t.sharded)
            t.tracker.info(f"exporting the best model (step {self.best_step}), not the last")
        final_dir = t.run_dir / "final"
        model_state = t.sharded.full_state_dict() if t.sharded is not None else None
        if t.ctx.is_main:
            write_model(t.model, t.tokenizer, final_dir, model_state)  # atomic, like the checkpoints
        split = self.cfg.eval.final_split
        after = t.evaluate(t.splits.test if split == "test" else t.val).metrics(split)
        key = f"{split}/accuracy"
        t.tracker.info(f"{split} accuracy: before {self.before.get(key, float('nan')):.1%} -> after {after[key]:.1%}")
        t.tracker.log_metrics({f"final/{k}": v for k, v in after.items()}, t.step)
        return after

    def resume(self, ckpt: Path) -> None:
        t = self.trainer
        saved_cfg = yaml.safe_load((ckpt / "config.yaml").read_text()) or {}
        current = yaml.safe_load(config_to_yaml(self.cfg))
        conflict = resume_conflict(saved_cfg, current, ckpt)
        if conflict:
            raise ResumeError(conflict)
        for key in ("optim.lr", "train.max_steps", "grpo.beta", "train.patience"):
            if _dotted(saved_cfg, key) != _dotted(current, key):
                t.tracker.info(f"resume: {key} changed {_dotted(saved_cfg, key)!r} -> {_dotted(current, key)!r}")
        state = load_checkpoint(ckpt, model=t.model, optimizer=t.optimizer, scheduler=t.scheduler, sharded=t.sharded)
        if self.cfg.optim.lr != _dotted(saved_cfg, "optim.lr"):
            for group in t.optimizer.param_groups:
                group["initial_lr"] = self.cfg.optim.lr
            t.scheduler.base_lrs = [self.cfg.optim.lr for _ in t.scheduler.base_lrs]
        # RNG comes back as rank 0 saved it; offset it per rank as at the start of a run
        if t.ctx.enabled:
            torch.manual_seed(self.cfg.train.seed + t.ctx.rank + 1000 * int(state["step"]))
        t.step = int(state["step"])
        t.sampler.load_state_dict(state["sampler"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.before = dict(state["before"])
        self.epoch_sum, self.epoch_count = float(state["epoch_sum"]), int(state["epoch_count"])
        self.last_reward = state.get("last_reward")
        self.last_saved_step = t.step
