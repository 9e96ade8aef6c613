"""SIGINT/SIGTERM during training: the first finishes the step, saves a checkpoint and stops; a
second one stops at once. Under several processes a signal on any rank stops every rank at the same
step (a collective each step), so their checkpoints agree."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from grpolab.parallel.distributed import DistContext


class StopSignals:
    def __init__(self, warn: Callable[[str], None]) -> None:
        self.received: str | None = None
        self.signum: int | None = None  # the first signal's number (the exit code is 128 + it)
        self._warn = warn

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without saving")
        self.received = signal.Signals(signum).name
        self.signum = signum
        self._warn(f"{self.received} received: saving a checkpoint after this step (again to abort)")

    def any_rank(self, ctx: DistContext) -> bool:
        """True when this or any other rank received a signal (every rank must call it, every step)."""
        if ctx.all_reduce_sum({"stop": float(self.received is not None)})["stop"] > 0:
            self.received = self.received or "SIGTERM (another rank)"
            return True
        return False


@contextmanager
def stop_signals(warn: Callable[[str], None]) -> Iterator[StopSignals]:
    """Install the handlers for the duration of the run; the previous ones come back afterwards."""
    signals = StopSignals(warn)
    previous = {s: signal.signal(s, signals._handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
