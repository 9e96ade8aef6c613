"""How a distributed rank fails and how a finished process exits. Imports no torch: the command
line calls `exit_after_distributed_run` on every path, cheaply.

A rank that raises must not leave the others blocked in a collective: `failure_guard` logs the
error, aborts the process group and exits non-zero; the peers' next collective then fails at once
(gloo: connection closed) or at the latest after `distributed.timeout_s` (NCCL watchdog).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from grpolab.parallel.distributed import DistContext

R = TypeVar("R")
# Set once this process has started a process group (not when Accelerate or a test started it):
# `exit_after_distributed_run` then ends the process without interpreter finalization.
_started_group = False


def mark_group_started() -> None:
    global _started_group
    _started_group = True


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


@contextmanager
def failure_guard(ctx: DistContext, exit_code: int = 1) -> Iterator[None]:
    """Around a rank's whole run: if it raises, log, abort the group and exit non-zero at once, so the
    peers fail in their next collective instead of waiting forever for this rank.

    os._exit, not sys.exit: exit handlers (destroy_process_group, thread joins) could block on the
    very peers we are trying to release. A single process re-raises normally.
    """
    try:
        yield
    except SystemExit as stop:
        if stop.code in (None, 0) or not ctx.enabled:
            raise
        _die(ctx, stop, stop.code if isinstance(stop.code, int) else exit_code)
    except BaseException as err:
        if not ctx.enabled:
            raise
        _die(ctx, err, 128 + getattr(err, "signum", 2) if isinstance(err, KeyboardInterrupt) else exit_code)


def _die(ctx: DistContext, err: BaseException, code: int) -> None:
    sys.stderr.write(f"[rank {ctx.rank}/{ctx.world_size}] failed:\n{''.join(traceback.format_exception(err))}")
    sys.stderr.write(
        f"[rank {ctx.rank}/{ctx.world_size}] {type(err).__name__}: {first_line(err)} -- aborting the process "
        f"group; the other ranks stop at their next collective (within distributed.timeout_s={ctx.timeout_s:g})\n"
    )
    sys.stderr.flush()
    sys.stdout.flush()
    ctx.abort()
    os._exit(code)


def exit_after_distributed_run(code: int) -> None:
    """End a process that started a process group with os._exit(code), after flushing, instead of
    returning into interpreter finalization; a no-op in any other process.

    Why: objects that still reference the destroyed gloo group (FSDP's device mesh, a collective's
    work handle) are only freed while the interpreter shuts down, and a gloo worker thread that then
    needs the GIL aborts the process: SIGABRT, "terminate called without an active exception", exit
    code -6 for a run that had finished and saved everything (seen in CI, rarely, on a resumed FSDP
    run). Everything grpolab writes is closed by the time the command returns.
    """
    if not _started_group:
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_guarded(ctx: DistContext, fn: Callable[[], R]) -> R:
    with failure_guard(ctx):
        return fn()
    raise AssertionError("unreachable")  # for type checkers: failure_guard either returns or exits
