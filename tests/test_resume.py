"""Resume equals uninterrupted; SIGTERM saves before exiting; resuming with a changed model is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from grpolab.train.resume import ResumeError
from run_helpers import QUICK, read_metrics, without_time

pytestmark = pytest.mark.slow


def config(out: Path, *extra: str):
    return load_config(
        "default",
        [*QUICK, f"train.output_dir={out}", "train.save_every=2", "optim.lr=1e-3", "grpo.beta=0.05", *extra],
        env_file=None,
        environ={},
    )


def step_rows(run_dir: Path) -> dict[int, dict]:
    """Per-step training and eval metrics, time stripped (final/* rows describe the exported model)."""
    rows: dict[int, dict] = {}
    for row in without_time(read_metrics(run_dir)):
        if any(k.startswith("final/") for k in row):
            continue
        rows.setdefault(row["step"], {}).update(row)
    return rows


def test_resume_equals_uninterrupted(tmp_path):
    whole = GRPOTrainer(args=config(tmp_path / "whole", "train.max_steps=4")).train()
    first = GRPOTrainer(args=config(tmp_path / "split", "train.max_steps=2")).train()
    resumed = GRPOTrainer(args=config(tmp_path / "split", "train.max_steps=4", "train.resume=auto")).train()
    assert resumed.run_dir == first.run_dir  # same run directory, metrics appended
    expected, got = step_rows(whole.run_dir), step_rows(resumed.run_dir)
    for step in (1, 2, 3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-9), f"step {step} differs"


def test_resume_refuses_a_different_model_or_group_size(tmp_path):
    GRPOTrainer(args=config(tmp_path, "train.max_steps=2")).train()
    with pytest.raises(ResumeError, match=r"grpo\.num_generations"):
        GRPOTrainer(args=config(tmp_path, "train.max_steps=4", "train.resume=auto", "grpo.num_generations=2")).train()


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [*QUICK, "train.max_steps=500", "train.save_every=0", "eval.every_steps=0", f"train.output_dir={tmp_path}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "grpolab", "train", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    metrics = None
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training steps are being written
        found = list(tmp_path.glob("*/*/metrics.jsonl"))
        if found and sum(1 for _ in found[0].open()) >= 3:
            metrics = found[0]
            break
        time.sleep(0.5)
    assert metrics is not None, "training did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM  # 143: a scheduler sees "stopped", not "done"
    run_dir = metrics.parent
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted"
    steps = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*"))
    assert steps and 0 < steps[-1] < 500
