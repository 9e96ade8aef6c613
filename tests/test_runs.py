"""`grpolab runs`: statuses as written, a silently killed run detected as crashed, steps/best from
metrics.jsonl when status.json lacks them."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from grpolab.observe.runs import list_runs, runs_table

NOW = 1_700_000_000.0


def make_run(root: Path, rel: str, status: dict[str, Any] | None, metrics: list[dict[str, Any]] | None = None) -> Path:
    run = root / rel
    (run / "checkpoints" / "step-1").mkdir(parents=True)
    (run / "checkpoints" / "step-1" / "status.json").write_text("{}")  # never mistaken for a run
    if status is not None:
        (run / "status.json").write_text(json.dumps(status))
    if metrics:
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return run


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no such process now (pid reuse within the test is negligible)


def test_list_runs_reports_status_steps_and_best(tmp_path: Path) -> None:
    def status(state: str, step: int, age: float, **extra: Any) -> dict[str, Any]:
        host = socket.gethostname()
        return {
            "status": state,
            "step": step,
            "total_steps": 100,
            "host": host,
            "updated": NOW - age,
            **extra,
        }

    make_run(tmp_path, "grpo/01", status("finished", 100, 9999, best_accuracy=0.62, best_step=90))
    make_run(tmp_path, "grpo/02", status("stopped_early", 60, 9999, stop_reason="no improvement for 5 evals"))
    # running, heartbeat fresh, but its process is gone from this host: dead now, not in 30 min
    make_run(tmp_path, "grpo/03", status("running", 5, 10, pid=dead_pid()))
    # running, stale heartbeat, process gone: killed without a chance to say so
    make_run(tmp_path, "grpo/04", status("running", 7, 7200, pid=dead_pid()))
    # running, stale heartbeat, but the process lives on this host (a very long evaluation)
    make_run(tmp_path, "grpo/05", status("running", 9, 7200, pid=os.getpid()))
    # no status.json at all (an old run): steps and best from metrics.jsonl
    metrics = [
        {"step": 1, "reward": 0.1},
        {"step": 10, "eval/accuracy": 0.4},
        {"step": 20, "eval/accuracy": 0.3},
    ]
    make_run(tmp_path, "sweep/lr=1e-6/grpo/06", None, metrics)

    runs = {run.name: run for run in list_runs(tmp_path, now=NOW)}
    assert list(runs) == sorted(runs) and len(runs) == 6
    finished = runs["grpo/01"]
    assert (finished.status, finished.step, finished.best_accuracy, finished.best_step) == (
        "finished",
        100,
        0.62,
        90,
    )
    assert runs["grpo/02"].stop_reason == "no improvement for 5 evals"
    dead = runs["grpo/03"]
    assert dead.status == "crashed" and "is gone" in (dead.stop_reason or "")
    crashed = runs["grpo/04"]
    assert crashed.status == "crashed" and "no heartbeat for 120 min" in (crashed.stop_reason or "")
    assert runs["grpo/05"].status == "running"
    old = runs["sweep/lr=1e-6/grpo/06"]
    assert (old.status, old.step, old.best_accuracy, old.best_step) == ("unknown", 20, 0.4, 10)

    out = io.StringIO()
    Console(file=out, width=200).print(runs_table(list(runs.values())))
    text = out.getvalue()
    assert "6 runs" in text and "0.62 @ 90" in text and "100/100" in text and "crashed" in text


def test_a_stale_run_from_another_host_is_crashed(tmp_path: Path) -> None:
    status = {"status": "running", "pid": 1, "host": "some-other-node", "updated": NOW - 7200, "step": 3}
    make_run(tmp_path, "grpo/a", status)
    assert list_runs(tmp_path, now=NOW)[0].status == "crashed"
    assert list_runs(tmp_path / "missing") == []


def test_runs_and_tensorboard_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from grpolab.cli.observe import add_observe_parsers

    parser = argparse.ArgumentParser(prog="grpolab")
    add_observe_parsers(parser.add_subparsers(dest="command", required=True))

    def cli(argv: list[str]) -> int:
        args = parser.parse_args(argv)
        return int(args.func(args))

    make_run(tmp_path, "grpo/01", {"status": "finished", "step": 3, "total_steps": 3, "best_accuracy": 0.5})
    assert cli(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grpo/01" in out and "finished" in out and "3/3" in out
    assert cli(["runs", str(tmp_path / "none")]) == 0
    assert "no runs under" in capsys.readouterr().err

    calls: list[list[str]] = []
    monkeypatch.setattr("subprocess.call", lambda command: calls.append(command) or 0)
    assert cli(["tensorboard", "--logdir", str(tmp_path), "--port", "6123"]) == 0
    assert calls[0][1:] == ["-m", "tensorboard.main", "--logdir", str(tmp_path), "--port", "6123"]
