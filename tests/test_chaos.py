"""Chaos in the suite (issue 14): a run SIGKILLed at a checkpoint boundary and resumed equals the
uninterrupted run, step by step. The full audit (more kill moments, the bad-input table) is
benchmarks/chaos_audit.py."""

from __future__ import annotations

import pytest

from chaos import (
    environment,
    kill_when,
    resume,
    run_dir,
    same_trajectory,
    status,
    step_rows,
    steps_logged_once,
    train_command,
    two_runs_at_once,
)

pytestmark = pytest.mark.slow


def test_sigkill_at_a_checkpoint_then_resume_equals_the_uninterrupted_run(tmp_path):
    import subprocess

    assert subprocess.run(train_command(tmp_path / "whole"), env=environment(), capture_output=True).returncode == 0
    assert kill_when(tmp_path / "killed", "checkpoints/step-2"), "the run ended before its step-2 checkpoint"
    killed = run_dir(tmp_path / "killed")
    assert status(killed)["status"] == "running"  # SIGKILL: no chance to say otherwise
    assert resume(tmp_path / "killed") == 0
    assert status(killed)["status"] == "finished" and status(killed)["step"] == 4
    assert same_trajectory(step_rows(run_dir(tmp_path / "whole")), step_rows(killed))


def test_two_runs_started_together_never_share_a_run_directory(tmp_path):
    """Issue 22 item 1: same run name, same output folder, same second: a directory each."""
    done = two_runs_at_once(tmp_path, "train.max_steps=2")
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-300:] for d in done]
    dirs = sorted(p.parent for p in tmp_path.glob("*/*/status.json"))
    assert len(dirs) == 2 and all(steps_logged_once(d) for d in dirs)
    assert sorted(d.stdout.split("run directory: ")[-1].strip() for d in done) == [str(d) for d in dirs]
