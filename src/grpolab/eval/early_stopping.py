"""Early stopping on an evaluation metric: stop after `patience` evaluations without improvement.

- The first evaluation (the step-0 baseline) always counts as an improvement: it sets `best`.
- Higher is better (accuracy, pass@k, format rate, mean reward: the metrics worth stopping on). It improves
  when it beats `best` by MORE than `min_delta` (value > best + min_delta). A smaller gain counts as
  a bad evaluation and does not move `best`, so a slow drift of tiny gains cannot keep a run alive
  forever.
- NaN never improves (a diverged run must not reset the counter).
- patience = 0 turns stopping off; `best`/`best_step` are still tracked (they pick the best checkpoint).

The state is a plain JSON-able dict so it travels inside the checkpoint's trainer_state.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    """What one evaluation means: save a best checkpoint (`improved`), stop (`should_stop`), and why."""

    improved: bool
    should_stop: bool
    reason: str


class EarlyStopping:
    """Watches one metric across evaluations.

    >>> es = EarlyStopping("eval/accuracy", patience=2, min_delta=0.0)
    >>> [es.update(v, s).should_stop for s, v in [(0, 0.1), (30, 0.3), (60, 0.3), (90, 0.2)]]
    [False, False, False, True]
    """

    def __init__(self, metric: str, patience: int, min_delta: float = 0.0) -> None:
        if patience < 0:
            raise ValueError(f"patience must be >= 0 (0 = never stop), got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def _beats_best(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best + self.min_delta

    def update(self, value: float, step: int) -> Decision:
        """Record the metric of the evaluation at `step` and say whether to save as best and to stop."""
        value = float(value)
        if self._beats_best(value):
            previous = self.best
            self.best, self.best_step, self.bad_evals = value, step, 0
            was = "" if previous is None else f" (was {previous:.4g})"
            return Decision(True, False, f"{self.metric} improved to {value:.4g}{was} at step {step}")
        self.bad_evals += 1
        stop = self.patience > 0 and self.bad_evals >= self.patience
        best = "none" if self.best is None else f"{self.best:.4g} at step {self.best_step}"
        if stop:
            reason = (
                f"early stopping: {self.metric} has not improved by more than {self.min_delta:g} for "
                f"{self.bad_evals} evaluation(s) (patience {self.patience}); best {best}"
            )
        else:
            limit = f"/{self.patience}" if self.patience else ""
            reason = f"{self.metric} = {value:.4g}, no improvement ({self.bad_evals}{limit}); best {best}"
        return Decision(False, stop, reason)

    def state_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters. patience/min_delta keep this object's values: a resumed run may change
        them. A different metric would make `best` meaningless, so that is an error."""
        if state["metric"] != self.metric:
            raise ValueError(f"early-stopping state is for {state['metric']!r}, but this run watches {self.metric!r}")
        self.best = None if state["best"] is None else float(state["best"])
        self.best_step = None if state["best_step"] is None else int(state["best_step"])
        self.bad_evals = int(state["bad_evals"])
