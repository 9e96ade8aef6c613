"""Issue 22, items 6-7: a reward that never returns cannot hang a run (rewards.timeout_s), and
SIGTERM/SIGINT stop a run within seconds in every phase, with exit code 128 + signal and the signal in
status.json. Real subprocesses: the tiny model, a reward that sleeps for an hour on one chosen call."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time

import pytest

from chaos import PHASES, environment, signal_while_hung
from grpolab import deadline
from grpolab.rewards.api import BoundReward, RewardInputs, RewardSet


def batch(n: int = 2) -> RewardInputs:
    return RewardInputs(
        prompts=["1+1="] * n, completions=["2"] * n, completion_ids=[[1]] * n, rows=[{"answer": "2"}] * n
    )


def hangs(completions, **_):
    time.sleep(3600)


async def hangs_async(completions, **_):
    await asyncio.sleep(3600)


async def blocks_its_loop(completions, **_):
    time.sleep(3600)  # a coroutine that never yields: wait_for alone could not cut it


def one(completions, **_):
    return [1.0] * len(completions)


# --- item 6: the reward time limit ------------------------------------------------------------------


@pytest.mark.parametrize("fn", [hangs, hangs_async, blocks_its_loop], ids=lambda f: f.__name__)
def test_a_reward_that_never_returns_counts_as_none_after_the_limit(fn, monkeypatch, caplog):
    monkeypatch.setattr(deadline, "_GRACE_S", 0.2)  # a blocked event loop: the limit + this
    rewards = RewardSet([BoundReward("slow", fn, 1.0, {}), BoundReward("one", one, 0.5, {})], timeout_s=0.3)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="grpolab.rewards"):
        scores = rewards.score(batch(2))
    assert time.perf_counter() - started < 3.0
    assert scores.per_function == {"slow": [None, None], "one": [1.0, 1.0]}
    assert scores.total == [0.5, 0.5]  # 0.5 x 1.0; the timed-out reward drops out, as a None does
    assert scores.metrics()["rewards/slow/timeouts"] == 2.0 and "rewards/one/timeouts" not in scores.metrics()
    assert "did not return within rewards.timeout_s=0.3s" in caplog.text


def test_a_reward_within_the_limit_is_unchanged_and_errors_still_name_the_sample():
    def raises_on_second(completions, **_):
        if len(completions) == 1 and completions[0] == "bad":
            raise ValueError("boom")
        if len(completions) > 1:
            raise ValueError("batch")
        return [1.0]

    inputs = RewardInputs(prompts=["p", "p"], completions=["ok", "bad"], completion_ids=[[1], [2]], rows=[{}, {}])
    rewards = RewardSet([BoundReward("r", raises_on_second, 1.0, {})], on_error="skip", timeout_s=5.0)
    scores = rewards.score(inputs)
    assert scores.per_function["r"] == [1.0, None] and scores.errors == {"r": 1} and scores.timeouts == {"r": 0}


# --- items 6 and 7: signals in every phase, through the command line -----------------------------------


def run_dir_of(out):
    (status,) = out.glob("*/*/status.json")
    return status.parent


@pytest.mark.parametrize(
    ("phase", "fn"),
    [
        ("before-training evaluation", "slow"),
        ("training step (rewards)", "slow_async"),
        ("final evaluation", "slow"),
    ],
)
def test_sigterm_stops_a_run_hung_in_a_reward_within_seconds(tmp_path, phase, fn):
    code, seconds = signal_while_hung(tmp_path, PHASES[phase], fn=fn)
    assert code == 128 + signal.SIGTERM, f"{phase}: exit {code} after {seconds:.0f} s"
    assert seconds < 20  # the save and the journal, not the hour the reward sleeps
    status = json.loads((run_dir_of(tmp_path) / "status.json").read_text())
    assert (status["status"], status["signal"]) == ("interrupted", signal.SIGTERM)
    checkpoints = sorted(p.name for p in (run_dir_of(tmp_path) / "checkpoints").glob("step-*"))
    # before training nothing is saved; a cut step is dropped (step 0 saved); the final phase keeps step 1
    expected = {"before-training evaluation": [], "training step (rewards)": ["step-0"], "final evaluation": ["step-1"]}
    assert checkpoints == expected[phase]


def test_sigterm_while_the_model_loads_exits_143_at_once(tmp_path):
    """The command line honours a signal before the trainer's handlers exist (imports, model load)."""
    script = (
        "import os, signal, sys, time\n"
        "import grpolab.api\n"
        "def loading(cfg):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)  # stands for a model that takes a minute to load\n"
        "grpolab.api.run_training = loading\n"
        "from grpolab.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", script, "train", "logging.quiet=true", f"train.output_dir={tmp_path}"],
        env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-500:]
    assert "error: interrupted" in done.stderr
    assert time.time() - started < 50
