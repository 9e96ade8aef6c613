"""SIGINT/SIGTERM: honoured in every phase of a run, with the exit code 128 + signal (130, 143).

- Phases that lose nothing when cut (model load, the before-training evaluation, resuming, the
  rollouts and reward scoring of a step, the final validation, export and evaluation) are *abortable*:
  the first signal raises `RunInterrupted` at once, from the handler, so a hung reward or a long
  generation cannot delay the stop. A step cut before its update is dropped: the trainer puts the
  step's start state back (sampler, RNG) and saves the previous step, so `--resume` continues exactly.
- From the policy update until the end of the step the signal is only recorded: the weights have
  changed, so the step is finished, checkpointed, and then the run stops.
- A second signal stops at once, without saving (still `RunInterrupted`, exit 128 + signal).

A validation or checkpoint between steps is finished first (the step it belongs to is done).
Under several processes a step is never abortable: a signal on any rank stops every rank at the same
step (a collective each step), so their checkpoints agree. Outside the steps a signal ends the rank
and the failure guard (parallel/lifecycle.py) stops the others.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch-free at run time: the command line installs `interrupt_at_once` early
    from grpolab.parallel.distributed import DistContext

R = TypeVar("R")


class RunInterrupted(KeyboardInterrupt):
    """A stop signal that ends the run now; `signum` gives the exit code (128 + signum)."""

    def __init__(self, signum: int, message: str = "", second: bool = False) -> None:
        self.signum = signum
        self.second = second  # a second signal: stop without saving
        super().__init__(message or f"{signal.Signals(signum).name} received")


class StopSignals:
    def __init__(self, warn: Callable[[str], None]) -> None:
        self.received: str | None = None
        self.signum: int | None = None  # the first signal's number (the exit code is 128 + it)
        self.abortable = False  # True: the first signal raises RunInterrupted at once
        self._warn = warn

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise RunInterrupted(signum, f"second {name}: stopping without saving", second=True)
        self.received, self.signum = name, signum
        if self.abortable:
            raise RunInterrupted(signum)
        self._warn(f"{name} received: saving a checkpoint after this step (again to abort)")

    @contextmanager
    def phase(self, abortable: bool) -> Iterator[None]:
        """Run a phase abortable (or not); a signal already received stops an abortable phase at entry."""
        before, self.abortable = self.abortable, abortable
        try:
            if abortable and self.signum is not None:
                raise RunInterrupted(self.signum)
            yield
        finally:
            self.abortable = before

    def commit(self) -> None:
        """From here on the current step is finished, not dropped (called as the update starts)."""
        self.abortable = False

    def step_or_drop(self, step: Callable[[], R], state: Any, abortable: bool) -> R | None:
        """`step()`, abortable until it calls `commit()`. A first signal before that drops the step:
        `state` (a RunState) and the random streams go back to the step's start, and None comes back."""
        snapshot = state.snapshot()
        try:
            with self.phase(abortable):
                return step()
        except RunInterrupted as err:
            if err.second:
                raise
        state.rollback(snapshot)
        return None

    def final_or_stop(
        self, finish: Callable[[Any, str], dict[str, float]], stopped_by: Any, why: str, save: Callable[[], None]
    ) -> tuple[Any, str, dict[str, float]]:
        """`finish(stopped_by, why)` (final validation, export, evaluation) abortable, as (stop reason,
        why, its metrics). A first signal cuts it: `save()` keeps the last step (not abortable), and
        the run ends interrupted; `--resume` runs the final phase again."""
        from grpolab.train.state import StopReason

        if stopped_by is StopReason.SIGNAL:  # the loop already stopped for a signal: nothing to cut
            return stopped_by, why, finish(stopped_by, why)
        try:
            with self.phase(abortable=True):
                return stopped_by, why, finish(stopped_by, why)
        except RunInterrupted as err:
            if err.second:
                raise
        with self.phase(abortable=False):
            save()
        return StopReason.SIGNAL, f"{self.received} received in the final phase, the last step saved", {}

    def any_rank(self, ctx: DistContext) -> bool:
        """True when this or any other rank received a signal (every rank must call it, every step)."""
        if ctx.all_reduce_sum({"stop": float(self.received is not None)})["stop"] > 0:
            self.received = self.received or "SIGTERM (another rank)"
            return True
        return False


def interrupt_at_once(signum: int, _frame: FrameType | None) -> None:
    """The handler before and after the trainer's own (the command line's model load, imports)."""
    raise RunInterrupted(signum)


@contextmanager
def stop_signals(signals: StopSignals) -> Iterator[StopSignals]:
    """Install the handlers for the duration of the run; the previous ones come back afterwards."""
    previous = {s: signal.signal(s, signals._handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
