"""Is the run learning anything? Two signs that it cannot, watched step by step:

- **Unscored**: a reward function with a non-zero weight returned None for every sample of
  `health.max_unscored_steps` consecutive steps (a judge that cannot be reached, a reward that
  cannot parse anything, gold answers no correctness reward can match). Its part of the reward is
  missing, so the run optimises something else or nothing: it stops with UnscoredRunError.
- **Never scored**: a weighted reward that returned None for every sample of every step of a run
  too short for the count above (a 3-step smoke test against a judge that always fails). The run
  ends `degraded` with that reason (exit code 3) instead of `finished` with reward NaN; on with the
  unscored check (health.max_unscored_steps > 0).
- **Flat**: `health.max_flat_steps` consecutive steps without a trainable signal (every group's
  rewards equal, so every advantage is 0, or nothing left to train on). The run goes on, but is
  marked `degraded` in status.json and the summary, and `grpolab train` exits with code 3.

Both counts are of consecutive steps, so a short outage or a few easy batches do not trip them;
0 turns a check off. Metrics are already reduced over ranks, so every rank decides the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grpolab.config.schema import Config
from grpolab.errors import UserError


class UnscoredRunError(UserError, RuntimeError):
    """A reward scored nothing for too long; the message names the reward and the steps."""


@dataclass
class RunHealth:
    max_unscored_steps: int
    max_flat_steps: int
    weighted_rewards: list[str]
    unscored_since: dict[str, int] = field(default_factory=dict)  # label -> first step of its None run
    flat_since: int | None = None
    degraded: str | None = None  # why the run is degraded, once it is
    scored: set[str] = field(default_factory=set)  # weighted rewards that scored some sample, some step
    steps: list[int] = field(default_factory=list)  # first and last step observed

    @classmethod
    def from_config(cls, cfg: Config) -> RunHealth:
        labels = [spec.label for spec in cfg.rewards.functions if spec.weight != 0]
        return cls(cfg.health.max_unscored_steps, cfg.health.max_flat_steps, labels)

    def observe(self, step: int, metrics: dict[str, float]) -> str | None:
        """Take step `step`'s metrics; raise UnscoredRunError, or return a warning the first time the
        run becomes degraded (None otherwise)."""
        self.steps = [self.steps[0] if self.steps else step, step]
        for label in self.weighted_rewards:
            if metrics.get(f"rewards/{label}/none_frac", 0.0) < 1.0:
                self.scored.add(label)
            if metrics.get(f"rewards/{label}/none_frac", 0.0) >= 1.0:
                first = self.unscored_since.setdefault(label, step)
                if self.max_unscored_steps and step - first + 1 >= self.max_unscored_steps:
                    raise UnscoredRunError(
                        f"reward '{label}' returned None for every sample of steps {first}-{step}; nothing can "
                        "be learned from it (an unreachable judge, an answer format no reward can read?). "
                        f"Stopped after health.max_unscored_steps={self.max_unscored_steps} steps"
                    )
            else:
                self.unscored_since.pop(label, None)
        flat = metrics.get("frac_reward_zero_std", 0.0) >= 1.0 or metrics.get("train/skipped_empty", 0.0) > 0
        if not flat:
            self.flat_since = None
            return None
        if self.flat_since is None:
            self.flat_since = step
        if self.degraded is None and self.max_flat_steps and step - self.flat_since + 1 >= self.max_flat_steps:
            self.degraded = (
                f"no trainable signal in steps {self.flat_since}-{step} (every group's rewards were equal, "
                f"mean reward {metrics.get('reward', float('nan')):.3g}): the task is too hard or too easy for "
                "the model, or the rewards cannot tell completions apart"
            )
            return f"run degraded: {self.degraded}"
        return None

    def final_status(self, status: str) -> str:
        """A finished or early-stopped run that was degraded reports `degraded` instead; a run in which
        a weighted reward never scored is degraded from here on (`degraded` says which reward)."""
        never = [label for label in self.weighted_rewards if label not in self.scored]
        if self.steps and never and self.max_unscored_steps and self.degraded is None:
            first, last = self.steps
            self.degraded = (
                f"reward '{never[0]}' returned None for every sample of every step ({first}-{last}): the run "
                "learned nothing from it (an unreachable judge, an answer format no reward can read?)"
            )
        return "degraded" if self.degraded and status in ("finished", "stopped_early") else status

    def status_fields(self) -> dict[str, Any]:
        return {"degraded": self.degraded} if self.degraded else {}
