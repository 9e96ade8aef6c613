"""What a run carries from step to step, and why it stopped: plain data, saved in every checkpoint.

`RunState.state_dict()` is the checkpoint's trainer_state.json (same keys as before this module
existed, so older checkpoints still resume). Everything a resumed run needs beyond the weights, the
optimizer, the scheduler and the RNG is here: k steps + resume + N-k steps replay the uninterrupted
run exactly (CPU, same seed).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from grpolab.algo.entropy import EntropyControl
from grpolab.data.order import QuestionOrder
from grpolab.eval.early_stopping import EarlyStopping


class StopReason(Enum):
    """Why the loop ended; the run's status follows from it."""

    MAX_STEPS = "max_steps"
    EARLY_STOPPING = "early_stopping"
    SIGNAL = "signal"

    @property
    def status(self) -> str:
        return {"max_steps": "finished", "early_stopping": "stopped_early", "signal": "interrupted"}[self.value]


@dataclass
class RunState:
    question_order: QuestionOrder  # which questions come next (epoch, position)
    stopper: EarlyStopping  # best value, its step, evaluations without improvement
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # every validation's metrics, with "step"
    before: dict[str, float] = field(default_factory=dict)  # final-split metrics before training
    epoch_sum: float = 0.0  # rewards of the current epoch (for epoch/accumulated_reward)
    epoch_count: int = 0
    last_reward: float | None = None
    num_tokens: float = 0.0  # prompt + completion tokens of every rollout so far (TRL's num_tokens)
    entropy_control: EntropyControl | None = None  # the entropy bonus's coefficient (adaptive: it moves)

    @property
    def best_accuracy(self) -> float | None:
        return self.stopper.best

    @property
    def best_step(self) -> int | None:
        return self.stopper.best_step

    def record_validation(self, metrics: dict[str, float]) -> None:
        """Add the moving average and best-so-far to `metrics` and append them to the history."""
        accuracies = [h["eval/accuracy"] for h in self.history[-2:]] + [metrics["eval/accuracy"]]
        metrics["eval/accuracy_moving_avg"] = statistics.fmean(accuracies)
        metrics["eval/best_accuracy"] = float(self.stopper.best or 0.0)
        self.history.append({"step": float(self.step), **metrics})

    def add_rewards(self, rewards: torch.Tensor) -> None:
        """Count a step's scored rewards (NaN = no reward function could score) into the epoch sums."""
        scored = rewards[~torch.isnan(rewards)]
        self.epoch_sum += float(scored.sum())
        self.epoch_count += int(scored.numel())

    def close_epoch(self) -> dict[str, float]:
        """The finished epoch's summary metrics; the sums start again from zero."""
        out = {
            "epoch/accumulated_reward": self.epoch_sum,
            "epoch/mean_reward": self.epoch_sum / max(self.epoch_count, 1),
            "epoch/samples": float(self.epoch_count),
        }
        self.epoch_sum, self.epoch_count = 0.0, 0
        return out

    def trainer_state(self, max_steps: int) -> Any:
        """What TRL passes its rewards as `trainer_state`: a transformers TrainerState of this moment
        (global_step = optimizer steps done, epoch = the questions of those steps / the training set)."""
        from transformers import TrainerState

        epoch = self.step * self.question_order.batch_size / max(self.question_order.num_questions, 1)
        return TrainerState(global_step=self.step, max_steps=max_steps, epoch=epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "question_order": self.question_order.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "history": self.history,
            "before": self.before,
            "epoch_sum": self.epoch_sum,
            "epoch_count": self.epoch_count,
            "last_reward": self.last_reward,
            "num_tokens": self.num_tokens,
            "entropy_control": None if self.entropy_control is None else dataclasses.asdict(self.entropy_control),
        }

    def snapshot(self) -> tuple[str, dict[str, Any]]:
        """This state and the random streams, cheaply (no weights): a step cut by a signal before its
        update is dropped by `rollback`, so the checkpoint then saved equals the previous step's."""
        from grpolab.train.checkpoint import capture_rng_state

        return json.dumps(self.state_dict()), capture_rng_state()

    def rollback(self, snapshot: tuple[str, dict[str, Any]]) -> None:
        from grpolab.train.checkpoint import restore_rng_state

        self.load_state_dict(json.loads(snapshot[0]))
        restore_rng_state(snapshot[1])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        # checkpoints written before the rename call it "sampler"
        self.question_order.load_state_dict(state["question_order"] if "question_order" in state else state["sampler"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.before = dict(state["before"])
        self.epoch_sum, self.epoch_count = float(state["epoch_sum"]), int(state["epoch_count"])
        self.last_reward = state.get("last_reward")
        self.num_tokens = float(state.get("num_tokens", 0.0))  # checkpoints before the count: from 0
        control = state.get("entropy_control")
        self.entropy_control = None if control is None else EntropyControl(**control)


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
    stop_reason: str = ""  # the reason in words
    stopped_by: StopReason = StopReason.MAX_STEPS
    degraded: str | None = None  # why the run counts as degraded (train/health.py), if it does
    signal: int | None = None  # the signal that interrupted it, if one did (exit code 128 + signal)
