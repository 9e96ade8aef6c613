"""`grpolab runs`: every run under an outputs folder, with its status, steps and best accuracy.

A run directory is any folder holding status.json or metrics.jsonl (`<outputs>/<name>/<timestamp>/`,
and one level deeper for sweeps: `<sweep>/<combination>/<name>/<timestamp>/`).

A process killed with SIGKILL (OOM killer, a preempted node) cannot write "crashed" into its own
status.json; it stays "running" forever. So a "running" run is shown as crashed when its heartbeat
(status.json's `updated`, refreshed by the tracker while steps advance) is older than `stale_after`
AND its process is gone. On the host that wrote it the pid alone decides, at once (a pid that is
gone is a dead run, however fresh the heartbeat); from another host the stale heartbeat decides.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from grpolab.observe.files import METRICS_FILE, STATUS_FILE, read_jsonl, read_status

STALE_AFTER_S = 30 * 60  # longer than any eval without a step; a live pid on this host overrides it
_SKIP_DIRS = {"checkpoints", "tensorboard", "wandb", "__pycache__"}


@dataclass
class RunInfo:
    path: Path
    name: str  # path relative to the outputs folder, e.g. "grpo/2025-01-01_12-00-00"
    status: str  # running | finished | stopped_early | degraded | crashed | interrupted | unknown
    step: int | None = None
    total_steps: int | None = None
    best_accuracy: float | None = None
    best_step: int | None = None
    stop_reason: str | None = None
    updated: float | None = None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def effective_status(status: dict[str, Any], now: float, stale_after: float = STALE_AFTER_S) -> tuple[str, str | None]:
    """(status, reason) after the liveness check; other statuses are returned as written."""
    state = str(status.get("status", "unknown"))
    if state != "running":
        return state, status.get("stop_reason") or status.get("error")
    pid, host = status.get("pid"), status.get("host")
    updated = status.get("updated")
    silent = (now - updated) / 60 if isinstance(updated, (int, float)) else 0.0  # minutes since the heartbeat
    stale = silent * 60 > stale_after
    if isinstance(pid, int) and host == socket.gethostname():  # this machine: the pid decides, now
        if pid_alive(pid):
            return state, None
        return "crashed", f"process {pid} is gone (killed?)" + (f", no heartbeat for {silent:.0f} min" if stale else "")
    if not stale:
        return state, None
    minutes = silent
    return "crashed", f"no heartbeat for {minutes:.0f} min and process {pid} is gone"


def _from_metrics(path: Path) -> tuple[int | None, float | None, int | None]:
    """(last step, best eval/accuracy, its step) from metrics.jsonl, for runs without a full status."""
    last, best, best_step = None, None, None
    for record in read_jsonl(path / METRICS_FILE):
        step = record.get("step")
        if not isinstance(step, int):
            continue
        last = step if last is None else max(last, step)
        acc = record.get("eval/accuracy")
        if isinstance(acc, (int, float)) and (best is None or acc > best):
            best, best_step = float(acc), step
    return last, best, best_step


def read_run(path: Path, root: Path, now: float | None = None, stale_after: float = STALE_AFTER_S) -> RunInfo:
    status = read_status(path)
    state, reason = effective_status(status, time.time() if now is None else now, stale_after)
    info = RunInfo(
        path=path,
        name=path.relative_to(root).as_posix() if path != root else path.name,
        status=state,
        step=status.get("step"),
        total_steps=status.get("total_steps"),
        best_accuracy=status.get("best_accuracy"),
        best_step=status.get("best_step"),
        stop_reason=reason,
        updated=status.get("updated"),
    )
    if info.step is None or info.best_accuracy is None:
        last, best, best_step = _from_metrics(path)
        info.step = info.step if info.step is not None else last
        if info.best_accuracy is None:
            info.best_accuracy, info.best_step = best, best_step
    return info


def find_run_dirs(outputs_dir: Path) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(outputs_dir):
        if STATUS_FILE in files or METRICS_FILE in files:
            found.append(Path(current))
            dirs.clear()  # a run's subfolders (checkpoints, tensorboard) hold no runs
            continue
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
    return sorted(found)


def list_runs(outputs_dir: Path, *, stale_after: float = STALE_AFTER_S, now: float | None = None) -> list[RunInfo]:
    """Runs under `outputs_dir`, sorted by path (so by name, then by start time)."""
    root = Path(outputs_dir)
    if not root.is_dir():
        return []
    return [read_run(path, root, now, stale_after) for path in find_run_dirs(root)]


STATUS_STYLE = {
    "running": "cyan",
    "finished": "green",
    "stopped_early": "green",
    "degraded": "yellow",
    "crashed": "red",
}


def runs_table(runs: list[RunInfo]) -> Table:
    table = Table(title=f"{len(runs)} runs", title_justify="left")
    table.add_column("run", no_wrap=True)  # a path: it is copied, so it stays on one line
    for column in ("status", "steps", "best acc"):
        table.add_column(column, no_wrap=True)
    table.add_column("note")
    for run in runs:
        steps = "-" if run.step is None else f"{run.step}" + (f"/{run.total_steps}" if run.total_steps else "")
        best = "-" if run.best_accuracy is None else f"{run.best_accuracy:.4g} @ {run.best_step}"
        style = STATUS_STYLE.get(run.status, "yellow")
        # Text, not markup: a stop reason like "KeyError: ['x']" must print as written.
        table.add_row(Text(run.name), Text(run.status, style=style), steps, best, Text(run.stop_reason or ""))
    return table
