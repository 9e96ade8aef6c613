"""The research journal: one markdown entry per run, appended when the run ends, however it ends.

    ### high_temp - 2026-11-30 14:05 - Run ID: a1b2c3d4
    **Status**: finished (max_steps: reached train.max_steps=400)
    **Tags**: temperature, arithmetic
    **Hypothesis**: a higher temperature keeps the groups' rewards diverse
    **Command**: `grpolab train --temperature 1.0 --exp_name high_temp`
    **Run directory**: outputs/default/2026-11-30_14-05-12
    **Results**: test/accuracy 0.29 -> 0.525; best eval/accuracy 0.55 at step 350; final reward 0.81;
                 400/400 steps in 7m 02s

The canonical arithmetic script asked its users to keep this by hand (experiment name, W&B run id,
timestamp, hypothesis, command, results); here the run writes it. The run id is the W&B run's id when
W&B is on (the id its dashboard shows), else the run directory's `<run_name>/<time>`. The results come
from the run directory's status.json, the file every run keeps current, so a crashed or interrupted
run gets its entry too. `journaled` is the one call site: it wraps a training call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from grpolab.config.schema import Config
from grpolab.observe.files import read_status

JOURNAL_FILE = "JOURNAL.md"
Result = TypeVar("Result")


def journal_path(cfg: Config) -> Path:
    return Path(cfg.journal.path) if cfg.journal.path else Path(cfg.train.output_dir) / JOURNAL_FILE


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def results_line(status: dict[str, Any]) -> str:
    """Before/after on the final split, the best validation score, the last reward, steps and time."""
    parts = []
    before, after = status.get("before") or {}, status.get("after") or {}
    for key in after or before:
        if key.count("/") <= 1:  # headline metrics; the per-category ones are in report.html
            parts.append(f"{key} {_fmt(before.get(key, '-'))} -> {_fmt(after.get(key, '-'))}")
    if status.get("best_accuracy") is not None:
        parts.append(f"best eval/accuracy {_fmt(status['best_accuracy'])} at step {status.get('best_step')}")
    if status.get("final_reward") is not None:
        parts.append(f"final reward {_fmt(status['final_reward'])}")
    steps = f"{status.get('step', 0)}/{status.get('total_steps', '?')} steps"
    if status.get("seconds") is not None:
        steps += f" in {_duration(float(status['seconds']))}"
    return "; ".join([*parts, steps])


def format_entry(
    cfg: Config, command: str, run_dir: Path | None, error: BaseException | None = None, now: datetime | None = None
) -> str:
    status = read_status(run_dir) if run_dir is not None else {}
    name = cfg.journal.exp_name or cfg.train.run_name
    run_id = status.get("wandb_id") or (f"{run_dir.parent.name}/{run_dir.name}" if run_dir else "-")
    stamp = (now or datetime.now()).strftime("%Y-%m-%d %H:%M")
    state = str(status.get("status") or "finished")
    if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C: the trainer's status says "crashed"
        state = "interrupted"
    elif error is not None and state in ("running", "finished"):  # died before the tracker could say so
        state = "crashed"
    reason = status.get("stop_reason") or (f"{type(error).__name__}: {error}" if error is not None else "")
    lines = [
        f"### {name} - {stamp} - Run ID: {run_id}",
        f"**Status**: {state}" + (f" ({reason})" if reason else ""),
    ]
    if cfg.journal.tags:
        lines.append(f"**Tags**: {', '.join(cfg.journal.tags)}")
    lines.append(f"**Hypothesis**: {cfg.journal.hypothesis or '-'}")
    lines.append(f"**Command**: `{command}`")
    if run_dir is not None:
        lines.append(f"**Run directory**: {run_dir}")
        lines.append(f"**Results**: {results_line(status)}")
    else:
        lines.append("**Results**: none (the run stopped before its run directory was made)")
    return "\n".join(lines) + "\n\n"


def append_entry(path: Path, entry: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8") as fh:  # one write per entry: runs ending together do not interleave
        fh.write(("# Research journal\n\n" if new else "") + entry)


def find_run_dir(cfg: Config, since: float) -> Path | None:
    """The run directory this process wrote status.json into since `since` (a run that raised)."""
    root = Path(cfg.train.output_dir) / cfg.train.run_name
    mine = [
        (status.get("updated", 0.0), path)
        for path in root.glob("*")
        if (status := read_status(path)) and status.get("pid") == os.getpid() and status.get("updated", 0) >= since
    ]
    return max(mine)[1] if mine else None


def journaled(cfg: Config, command: str, train: Callable[[Config], Result]) -> Result:
    """`train(cfg)`, then a journal entry for it (rank 0 only), also when it raises or is interrupted."""
    if not cfg.journal.enabled or int(os.environ.get("RANK", "0")) != 0:
        return train(cfg)
    started = time.time() - 1.0  # status.json times have sub-second noise across clocks
    try:
        result = train(cfg)
    except BaseException as err:
        append_entry(journal_path(cfg), format_entry(cfg, command, find_run_dir(cfg, started), err))
        raise
    run_dir = getattr(result, "run_dir", None)
    append_entry(journal_path(cfg), format_entry(cfg, command, Path(run_dir) if run_dir else None))
    return result
