"""One process per run directory: a new run creates its directory atomically, and every run (new or
resumed) holds an exclusive lock on `<run_dir>/.run.lock` until it ends.

Why both: two `grpolab train` started in the same second with the same run name used to pick the same
`<timestamp>` directory (checked, then created later), and a `--resume` of a run another process was
still training wrote the same checkpoints and metrics. `os.mkdir` fails when the directory exists, so
of two processes racing for a name exactly one gets it (the other takes `<timestamp>_1`); `flock` is
released by the kernel when its process dies (even by SIGKILL), so a crashed run never stays locked.
The lock file holds the owner's pid and host, for the one line that refuses a second process. The file
itself is never deleted: removing a lock file that another process may have just opened would let two
processes hold locks on two different files of the same name.

Not on Windows (no fcntl): the directory is still created atomically, but not locked.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from grpolab.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".run.lock"


class RunBusyError(UserError, RuntimeError):
    """The run directory is held by another live process (one line naming its pid)."""


class RunLock:
    """An exclusive, non-blocking lock on one run directory; `release()` (or process exit) frees it."""

    def __init__(self, run_dir: Path, handle: IO[str] | None) -> None:
        self.run_dir = Path(run_dir)
        self._handle = handle

    @classmethod
    def acquire(cls, run_dir: Path, record: bool = True) -> RunLock:
        """Lock `run_dir` (which must exist) or raise RunBusyError naming the process that holds it;
        `record`: write this process into the lock file (not for a mere check)."""
        path = Path(run_dir) / LOCK_FILE
        try:
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the life of the run
        except OSError as err:
            raise RunBusyError(f"cannot lock run directory {run_dir} ({err.strerror or err})") from None
        if fcntl is None:
            return cls(run_dir, handle)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunBusyError(
                f"run directory {run_dir} is in use by {owner}: two processes must not train one run; "
                "wait for it to end (or stop it), or start a new run without --resume"
            ) from None
        if record:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
        return cls(run_dir, handle)

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None


def claim_new_run_dir(parent: Path, stamp: str | None = None) -> tuple[Path, RunLock]:
    """Create `parent/<stamp>` (or `<stamp>_1`, `_2`, ... when taken) atomically and lock it."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = stamp or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for suffix in range(10_000):
        run_dir = parent / (stamp if suffix == 0 else f"{stamp}_{suffix}")
        try:
            run_dir.mkdir()  # atomic: fails if another process created it first
        except FileExistsError:
            continue
        return run_dir, RunLock.acquire(run_dir)
    raise RunBusyError(f"{parent}: 10000 run directories named {stamp}*; choose another train.run_name")


def check_run_free(resume_from: Path | None, ctx: Any) -> None:
    """Refuse, before the model loads, a resume of a run another process trains (rank 0 only). Only
    a check: the lock itself is taken by `open_run_dir` once the trainer is built, so a trainer that
    fails while building (a model that does not load) holds nothing."""
    if resume_from is not None and ctx.is_main:
        RunLock.acquire(Path(resume_from).parents[1], record=False).release()


def open_run_dir(cfg: Any, resume_from: Path | None, ctx: Any) -> tuple[Path, RunLock]:
    """(run directory, its lock held by rank 0): the resumed run's, or a new
    `output_dir/run_name/<timestamp>` created by rank 0 and broadcast (the clocks of ranks may differ)."""
    chosen, lock = None, RunLock(Path(), None)
    if resume_from is not None:
        chosen = Path(resume_from).parents[1]
        lock = RunLock.acquire(chosen) if ctx.is_main else lock
    elif ctx.is_main:
        chosen, lock = claim_new_run_dir(Path(cfg.train.output_dir) / cfg.train.run_name)
    return ctx.broadcast_object(chosen), lock
