"""The training loop's cadence and state: dynamic sampling, the LR schedule against the step counter,
a resume that is refused, and SIGTERM-then-resume against the uninterrupted run (tiny model)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from grpolab.data.order import QuestionOrder
from grpolab.eval.early_stopping import EarlyStopping
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Unsharded
from grpolab.train.groups import has_spread
from grpolab.train.resume import ResumeError
from grpolab.train.state import RunState, StopReason
from run_helpers import QUICK, read_metrics, without_time

pytestmark = pytest.mark.slow


def config(out: Path, *extra: str):
    return load_config("default", [*QUICK, f"train.output_dir={out}", *extra], env_file=None, environ={})


def numeric_then(reward_of_question):
    """A reward named like the built-in 'numeric' whose value depends on the question only."""

    def numeric(completions, question, **_):
        return [reward_of_question(q, c) for q, c in zip(question, completions)]

    return numeric


# --- pure pieces -----------------------------------------------------------------------------------


def test_has_spread_ignores_unscored_samples():
    nan = float("nan")
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [nan, 1.0, 1.0], [nan, nan, 2.0], [0.0, nan, 3.0]])
    # all equal | spread | equal once the NaN is left out | one scored sample | spread
    assert has_spread(rewards).tolist() == [False, True, False, False, True]


def test_run_state_round_trips_and_stop_reasons_map_to_statuses():
    state = RunState(QuestionOrder(10, 2, seed=1), EarlyStopping("eval/accuracy", patience=2))
    state.question_order.next_batch()
    state.stopper.update(0.5, 0)
    state.step, state.epoch_sum, state.epoch_count = 3, 2.5, 4
    state.record_validation({"eval/accuracy": 0.5})
    saved = json.loads(json.dumps(state.state_dict()))  # what trainer_state.json holds
    other = RunState(QuestionOrder(10, 2, seed=1), EarlyStopping("eval/accuracy", patience=2))
    other.load_state_dict(saved)
    assert other.state_dict() == state.state_dict()
    assert other.question_order.next_batch() == state.question_order.next_batch()
    # a checkpoint written before the rename names the question order "sampler"
    older = RunState(QuestionOrder(10, 2, seed=1), EarlyStopping("eval/accuracy", patience=2))
    saved["sampler"] = saved.pop("question_order")
    older.load_state_dict(saved)
    assert older.question_order.state_dict() == saved["sampler"] == {"epoch": 0, "position": 2}
    assert [r.status for r in StopReason] == ["finished", "stopped_early", "interrupted"]


# --- #11 defect 1: filter_zero_std_groups is DAPO dynamic sampling -------------------------------------


def test_dynamic_sampling_logs_each_sample_with_its_own_advantage(tmp_path):
    # questions with an even first operand always get 1.0 (no spread: filtered); the others get 1.0 for
    # a completion whose character codes sum to an even number, so their groups mostly have a spread
    def value(question, completion):
        return 1.0 if int(question.split()[2]) % 2 == 0 else float(sum(map(ord, completion)) % 2 == 0)

    cfg = config(
        tmp_path, "grpo.filter_zero_std_groups=true", "grpo.dynamic_sampling_rounds=2", "logging.sample_every=1",
        "logging.samples_per_step=8", "train.max_steps=2", "eval.every_steps=0",
    )  # fmt: skip
    summary = GRPOTrainer(reward_funcs=[numeric_then(value)], args=cfg).train()
    samples = [json.loads(line) for line in (summary.run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples
    for record in samples:
        first = int(record["prompt"].split()[2])
        assert first % 2 == 1, "a group without spread was trained on"
        # binary rewards with a spread: above the mean is positive, below negative
        assert (record["advantage"] > 0) == (record["reward"] == 1.0), record
    rows = [r for r in read_metrics(summary.run_dir) if "loss" in r]
    assert all(1 <= r["sampling/rounds"] <= 3 and r["sampling/kept_groups"] <= 2 for r in rows)


def test_every_group_filtered_skips_the_update_and_keeps_the_schedule_in_step(tmp_path):
    # a constant reward: no group ever has a spread, every step is empty after 1 + 1 rounds
    cfg = config(
        tmp_path, "grpo.filter_zero_std_groups=true", "grpo.dynamic_sampling_rounds=1", "logging.sample_every=1",
        "train.max_steps=3", "eval.every_steps=0", "optim.scheduler=linear", "grpo.num_iterations=2",
    )  # fmt: skip
    trainer = GRPOTrainer(reward_funcs=[numeric_then(lambda q, c: 1.0)], args=cfg)
    summary = trainer.train()
    assert summary.status == "finished" and summary.steps == 3
    rows = [r for r in read_metrics(summary.run_dir) if "reward" in r and "eval/accuracy" not in r]
    assert [r["sampling/rounds"] for r in rows] == [2.0, 2.0, 2.0]
    assert all(r["train/skipped_empty"] == 1.0 and r["sampling/kept_groups"] == 0 for r in rows)
    # defect 8: the schedule advanced with the steps (3 steps x 2 iterations), not stood still
    assert trainer.trainer.scheduler.last_epoch == 6


def test_a_non_finite_gradient_still_advances_the_schedule():
    from grpolab.rollout.types import Rollout, collate
    from grpolab.train.optimizer import build_optimizer
    from grpolab.train.update import policy_update
    from run_helpers import micro_llama

    model = micro_llama()
    cfg = load_config(None, ["grpo.beta=0", "optim.scheduler=linear", "train.max_steps=4"], env_file=None, environ={})
    optimizer, scheduler = build_optimizer(model, cfg)
    rollouts = [Rollout(0, [1, 2], [3, 4], [1, 1], "", False) for _ in range(2)]
    out = policy_update(
        model,
        optimizer,
        scheduler,
        collate(rollouts, 0),
        torch.tensor([float("nan"), 1.0]),
        cfg,
        None,
        DistContext.single(),
        Unsharded(model),
    )
    assert out.skipped_nonfinite
    assert scheduler.last_epoch == 1  # step 1 of 4 is over: the LR is already the second step's
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * 0.75)


# --- #11 defect 7: a changed optim.lr applies from the first resumed step ------------------------------


def test_resume_with_a_new_lr_runs_the_first_step_at_it(tmp_path):
    GRPOTrainer(args=config(tmp_path, "train.max_steps=2", "train.save_every=2", "optim.lr=1e-3")).train()
    cfg = config(tmp_path, "train.max_steps=4", "train.resume=auto", "optim.lr=5e-3")
    trainer = GRPOTrainer(args=cfg).trainer
    trainer.restore(trainer.resume_from)
    assert trainer.state.step == 2
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {5e-3}  # every group (decay / no decay)


# --- issue 14 item 1: a refused resume writes nothing -----------------------------------------------


def test_a_refused_resume_leaves_the_run_byte_identical(tmp_path):
    first = GRPOTrainer(args=config(tmp_path, "train.max_steps=2", "logging.report=true")).train()
    before = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    for change in ("grpo.num_generations=2", "model.finetune=lora", "model.name=tiny-agent"):
        with pytest.raises(ResumeError, match=change.split("=")[0].replace(".", r"\.")):
            GRPOTrainer(args=config(tmp_path, "train.max_steps=4", "train.resume=auto", change)).train()
    after = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[p] == before[p] for p in before), [p.name for p in before if after[p] != before[p]]


# --- issue 14 item 2: SIGTERM then resume equals the uninterrupted run ----------------------------------


def interrupting(at_call: int | None):
    """The same reward every run (numeric correctness); sends SIGTERM to this process at one call."""
    from grpolab.rewards.correctness import numeric

    calls = {"n": 0}

    def reward(completions, answer, **_):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signal.SIGTERM)  # before the update: the step is dropped, step 0 saved
        return numeric(completions, answer)

    reward.__name__ = "numeric"
    return reward


def test_sigterm_then_resume_equals_the_uninterrupted_run(tmp_path):
    extra = ["train.max_steps=4", "eval.every_steps=2", "optim.lr=1e-3", "train.patience=0"]
    # reward calls: 1 per train step; the step-0 validation and the final ones are evaluations, and
    # evaluation calls the reward too: baseline test (1) + step-0 val (1) -> call 3 is train step 1
    rewards = {"reward_weights": [1.0, 0.2]}  # numeric + answer_format, as the default preset
    whole = GRPOTrainer(
        reward_funcs=[interrupting(None), "answer_format"], args=config(tmp_path / "whole", *extra), **rewards
    ).train()
    cut = GRPOTrainer(
        reward_funcs=[interrupting(3), "answer_format"], args=config(tmp_path / "cut", *extra), **rewards
    ).train()
    # the signal came while step 1 was scoring: that step is dropped, the state as before it saved
    assert cut.status == "interrupted" and cut.steps == 0 and cut.after == {} and cut.signal == signal.SIGTERM
    resumed_cfg = config(tmp_path / "cut", *extra, "train.resume=auto")
    resumed = GRPOTrainer(reward_funcs=[interrupting(None), "answer_format"], args=resumed_cfg, **rewards).train()
    assert resumed.run_dir == cut.run_dir and resumed.status == "finished"

    def by_step(run_dir: Path) -> dict[int, dict]:
        rows: dict[int, dict] = {}
        for row in without_time(read_metrics(run_dir)):
            rows.setdefault(row["step"], {}).update(row)
        return rows

    expected, got = by_step(whole.run_dir), by_step(resumed.run_dir)
    assert got.keys() == expected.keys()
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-9), f"step {step} differs"
    assert (resumed.best_step, resumed.best_accuracy, resumed.after) == (
        whole.best_step,
        whole.best_accuracy,
        whole.after,
    )
    from safetensors.torch import load_file

    exported, expected = (
        load_file(resumed.run_dir / "final" / "model.safetensors"),
        load_file(whole.run_dir / "final" / "model.safetensors"),
    )
    assert all(torch.allclose(exported[k], expected[k], atol=1e-6) for k in expected)
