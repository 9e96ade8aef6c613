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


# --- issue 22: two processes on one run, and rewards that hang -------------------------------------

# A reward that records each call as `<HANG_DIR>/size<N>-<k>` (N completions, k-th call of that size)
# and hangs on the call named by HANG_AT ("N:k"). With eval sizes different from the training batch
# the size says the phase: HANG_HOLD below makes test 5, validation 6 and a training step 8.
HANG_MODULE = """
import asyncio, os, time
from pathlib import Path


def _record(n):
    calls = Path(os.environ["HANG_DIR"])
    calls.mkdir(exist_ok=True)
    seen = len(list(calls.glob(f"size{n}-*"))) + 1
    (calls / f"size{n}-{seen}").touch()
    if f"{n}:{seen}" == os.environ.get("HANG_AT"):
        (calls / "hanging").touch()
        return True
    return False


def slow(completions, **_):
    if _record(len(completions)):
        time.sleep(3600)  # a plain function that never returns
    return [0.0] * len(completions)


async def slow_async(completions, **_):
    if _record(len(completions)):
        await asyncio.sleep(3600)  # a coroutine that never returns
    return [0.0] * len(completions)
"""
HANG_HOLD = ["data.test_size=5", "data.val_size=6", "eval.size=6", "train.questions_per_step=2"]
# The final phase is hung at its validation (6:2): its test-set call is skipped when no step beat the
# untrained model (the before-training result is reused for the same weights).
PHASES = {"before-training evaluation": "5:1", "training step (rewards)": "8:1", "final evaluation": "6:2"}


def hang_command(out: Path, fn: str, *extra: str) -> list[str]:
    rewards = f"rewards=[{{fn: 'hang_reward:{fn}'}}, {{name: numeric, weight: 1.0}}]"
    hold = [*HANG_HOLD, "grpo.num_generations=4", "train.max_steps=1", "eval.every_steps=0"]
    return train_command(out, *hold, rewards, *extra)


def hang_environment(out: Path, hang_at: str) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "hang_reward.py").write_text(HANG_MODULE)
    env = environment()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(out), env.get("PYTHONPATH", "")) if p)
    return {**env, "HANG_DIR": str(out / "calls"), "HANG_AT": hang_at}


def signal_while_hung(
    out: Path, hang_at: str, *extra: str, fn: str = "slow", sig: int = signal.SIGTERM, wait_s: float = 60
) -> tuple[int | None, float]:
    """Start a run whose reward hangs at `hang_at`, send `sig` once it hangs: (exit code or None if it
    did not stop within `wait_s`, seconds from the signal to the exit)."""
    proc = subprocess.Popen(
        hang_command(out, fn, *extra), env=hang_environment(out, hang_at),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (out / "calls" / "hanging").exists():
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"the run never reached the hanging reward call {hang_at} (exit {proc.poll()})")
            time.sleep(0.05)
        sent = time.time()
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=wait_s), time.time() - sent
        except subprocess.TimeoutExpired:
            return None, time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def two_runs_at_once(out: Path, *extra: str) -> list[subprocess.CompletedProcess[str]]:
    """Two `grpolab train` with the same run name and output folder, started together."""
    procs = [
        subprocess.Popen(train_command(out, *extra), env=environment(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def steps_logged_once(directory: Path) -> bool:
    """Every training step has exactly one row with a `loss` in metrics.jsonl."""
    steps = [row["step"] for row in read_metrics(directory) if "loss" in row]
    return len(steps) == len(set(steps))
