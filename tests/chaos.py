"""Kill a training run at a chosen moment and resume it (used by tests/test_chaos.py and
benchmarks/chaos_audit.py). A moment is a file that appears in the run directory: a checkpoint
`checkpoints/step-2`, a save in progress `.tmp-step-*`, the export in progress `.tmp-final-*`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from run_helpers import QUICK, read_metrics, without_time

CHAOS = [*QUICK, "train.save_every=1", "optim.lr=1e-3", "grpo.beta=0.05", "train.max_steps=4"]


def train_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "grpolab", "train", "-c", "default", *CHAOS, f"train.output_dir={out}", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def kill_when(out: Path, pattern: str, sig: int = signal.SIGKILL, timeout_s: float = 300) -> bool:
    """Start a run under `out`, send `sig` the moment a path matching `pattern` (a glob below the run
    directory) exists; True if it was sent before the run ended by itself."""
    proc = subprocess.Popen(train_command(out), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    try:
        while time.time() < deadline and proc.poll() is None:
            if list(out.glob(f"*/*/{pattern}")):
                proc.send_signal(sig)
                proc.wait(timeout=120)
                return True
            time.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def resume(out: Path) -> int:
    """`grpolab train ... --resume` (the latest checkpoint of the run name) until max_steps; exit code."""
    return subprocess.run(
        train_command(out, "--resume"), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ).returncode


def run_dir(out: Path) -> Path:
    """The newest run directory under `out` (a run killed before its first checkpoint starts afresh,
    in a directory of its own, when resumed)."""
    found = sorted(out.glob("*/*/status.json"))
    assert found, f"no run under {out}"
    return found[-1].parent


def step_rows(directory: Path) -> dict[int, dict]:
    """Per-step training and eval metrics, time stripped (final/* rows describe the exported model)."""
    rows: dict[int, dict] = {}
    for row in without_time(read_metrics(directory)):
        if not any(k.startswith("final/") for k in row):
            rows.setdefault(row["step"], {}).update(row)
    return rows


def status(directory: Path) -> dict:
    return json.loads((directory / "status.json").read_text())


def same_trajectory(a: dict[int, dict], b: dict[int, dict], rel: float = 1e-6) -> bool:
    if sorted(a) != sorted(b):
        return False
    for step in a:
        if sorted(a[step]) != sorted(b[step]):
            return False
        for key, value in a[step].items():
            other = b[step][key]
            if isinstance(value, float) and isinstance(other, float):
                if abs(value - other) > rel * max(1.0, abs(value)):
                    return False
            elif value != other:
                return False
    return True
