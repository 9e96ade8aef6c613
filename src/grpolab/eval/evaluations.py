"""Each (weights, questions) pair of a run evaluated once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpolab.eval.evaluate import EvalResult


class Evaluations:
    """Each (weights, questions) pair of a run evaluated once: evaluation is seeded, so it would give
    the same numbers. The exported model is often one already tested (the untrained one when no step
    beat it; with eval.final_split=val the best step's, and at step 0 the first validation)."""

    def __init__(self) -> None:
        self.results: dict[tuple[int, str], EvalResult] = {}  # (step of the weights, split) -> result
        self.loaded_step: int | None = None  # set once the model holds an earlier step's weights (best/)

    def once(
        self, step: int, best_step: int | None, split: str, run: Callable[..., EvalResult], *args: Any
    ) -> EvalResult:
        """`run(*args)` for the weights of `step` (or loaded_step) on `split`, computed once; the run's
        best step so far says which earlier results may still be asked for."""
        key = (step if self.loaded_step is None else self.loaded_step, split)
        if key not in self.results:
            # only the untrained and the best weights can be exported later: drop the rest (memory)
            self.results = {k: v for k, v in self.results.items() if k[0] in (0, best_step)}
            self.results[key] = run(*args)
        return self.results[key]

    def weights_changed(self) -> None:
        """The weights of a step already evaluated changed in place (the warm start trains before step 0,
        after the untrained model's evaluation): its results no longer describe them."""
        self.results.clear()
