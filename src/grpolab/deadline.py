"""Calls with a time limit: a reward or a tool that never returns must not hang a run.

Python cannot kill a thread, so a plain call runs in a daemon thread that is abandoned when its time
is up (it ends with the process); the caller gets TIMED_OUT and goes on. Waiting is a join with a
timeout, which a signal handler interrupts, so SIGTERM is not delayed by a hung call. Coroutines are
awaited with a deadline in a helper thread's event loop, so even one that blocks its loop cannot hang
the caller. Imports nothing from grpolab: rewards and environments both use it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

TIMED_OUT = object()  # what a call that passed its time limit gives instead of a result
_GRACE_S = 5.0  # an event loop blocked by its coroutine gets this long after the limit before it is left


def call_with_deadline(fn: Callable[..., Any], kwargs: dict[str, Any], timeout_s: float, name: str = "") -> Any:
    """`fn(**kwargs)`, or TIMED_OUT when it has not returned after `timeout_s` (0 = wait forever).
    The call runs in a daemon thread that is abandoned on timeout; its exception is raised here.
    Waiting is a lock with a timeout, which a signal handler interrupts, so SIGTERM is not delayed."""
    if timeout_s <= 0:
        return fn(**kwargs)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(**kwargs)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=target, name=f"grpolab-{name or getattr(fn, '__name__', 'fn')}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return TIMED_OUT
    if "error" in box:
        raise box["error"]
    return box["value"]


async def gather_with_deadline(awaitables: list[Any], timeout_s: float = 0.0) -> list[Any]:
    async def bounded(aw: Any) -> Any:
        try:
            return await asyncio.wait_for(aw, timeout_s)
        except asyncio.TimeoutError:
            return TIMED_OUT

    wrapped = [bounded(aw) for aw in awaitables] if timeout_s > 0 else awaitables
    return list(await asyncio.gather(*wrapped, return_exceptions=True))


def run_async(coro: Any, timeout_s: float = 0.0, count: int = 1) -> list[Any]:
    """Run a coroutine (`count` gathered calls) to completion. With a time limit, or when the caller
    already runs an event loop (a notebook, an async trainer), it gets its own loop in a daemon helper
    thread; a loop still busy `_GRACE_S` after the limit (a coroutine that blocks it, which wait_for
    cannot cut) is abandoned and every call counts as timed out."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if timeout_s <= 0:
            return asyncio.run(coro)  # type: ignore[no-any-return]
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=runner, name="grpolab-rewards-async", daemon=True)
    thread.start()
    thread.join(timeout_s + _GRACE_S if timeout_s > 0 else None)
    if thread.is_alive():
        return [TIMED_OUT] * count
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
