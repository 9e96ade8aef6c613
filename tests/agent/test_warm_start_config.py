"""The `warm_start:` section: bad values are one line naming the field; `grpolab train` runs the warm
start before GRPO when warm_start.sft_steps > 0 (on the tiny agent model, a few seconds)."""

from __future__ import annotations

import pytest

from grpolab.api import GRPOTrainer
from grpolab.config.load import ConfigError, load_config
from run_helpers import QUICK, read_metrics


def load(preset: str, *overrides: str):
    return load_config(preset, list(overrides))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("warm_start.sft_steps=-1", "warm_start.sft_steps"),
        ("warm_start.sft_lr=0", "warm_start.sft_lr"),
        ("warm_start.traces_per_step=0", "warm_start.traces_per_step"),
        ("warm_start.gold_turns=calculater", "warm_start.gold_turns"),
        ("warm_start.stepz=3", "warm_start"),
    ],
)
def test_bad_values_are_one_line_naming_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load("agent_tiny", override)
    message = str(err.value)
    assert field in message and "\n" not in message.strip()


def test_a_warm_start_needs_the_agent_loop():
    with pytest.raises(ConfigError, match=r"warm_start\.sft_steps > 0 trains on agent episodes"):
        load("default", "warm_start.sft_steps=3")
    assert load("default").warm_start.sft_steps == 0  # off unless asked for
    assert load("smollm2_agent_cpu").warm_start.sft_steps > 0  # the real-model agent preset uses it


def test_train_runs_the_warm_start_before_grpo(tmp_path):
    settings = ["train.max_steps=1", "agent.max_turns=2", "generation.max_new_tokens=96", "eval.size=4"]
    warm = ["warm_start.sft_steps=2", "warm_start.traces_per_step=2", "warm_start.questions=4"]
    args = load("agent_tiny", *QUICK, *settings, *warm, f"train.output_dir={tmp_path}")
    summary = GRPOTrainer(args=args).train()
    rows = read_metrics(summary.run_dir)
    [warm_row] = [r for r in rows if "warm_start/loss" in r]
    assert warm_row["step"] == 0 and warm_row["warm_start/traces"] == 4 and warm_row["warm_start/steps"] == 2
    assert [r["step"] for r in rows if "loss" in r] == [1]  # then GRPO


def test_warm_start_runs_without_an_eval_dataset(tmp_path):
    """A user's own rows and no eval_dataset: the warm start still runs, then GRPO, with no evaluation."""
    quick = [s for s in QUICK if not s.startswith(("data.", "eval."))]  # no held-out sizes: all rows train
    settings = ["train.max_steps=1", "agent.max_turns=2", "generation.max_new_tokens=96"]
    warm = ["warm_start.sft_steps=2", "warm_start.traces_per_step=2", "warm_start.questions=4"]
    args = load("agent_tiny", *quick, *settings, *warm, f"train.output_dir={tmp_path}")
    # the preset sets held-out sizes; a user's rows with none asked for all train (api.run_splits)
    data = args.data.model_dump(exclude={"val_size", "test_size"})
    args = args.model_copy(update={"data": type(args.data)(**data)})
    pairs = [(12, 34), (56, 7), (8, 90), (23, 45)]
    rows = [{"question": f"What is {a} * {b}?", "answer": str(a * b)} for a, b in pairs]
    trainer = GRPOTrainer(args=args, train_dataset=rows)
    assert trainer.trainer.splits.val == [] and len(trainer.trainer.splits.train) == 4
    summary = trainer.train()
    metrics = read_metrics(summary.run_dir)
    [warm_row] = [r for r in metrics if "warm_start/loss" in r]
    assert warm_row["warm_start/traces"] == 4 and warm_row["warm_start/loss"] > 0
    assert [r["step"] for r in metrics if "loss" in r] == [1]
    assert not any(key.startswith(("eval/", "val/", "test/")) for r in metrics for key in r)


def test_step_zero_is_evaluated_again_after_the_warm_start(tmp_path, monkeypatch):
    """Evaluations are memoised per (step, split): the warm start changes step 0's weights after the
    untrained model was evaluated, so the step-0 validation (and a best-of-step-0 export's final
    evaluation) must not reuse the untrained result."""
    import grpolab.train.trainer as trainer_module

    calls = []
    real = trainer_module.evaluate_examples

    def counted(*args, **kwargs):
        calls.append(len(calls))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate_examples", counted)
    settings = ["train.max_steps=1", "agent.max_turns=2", "generation.max_new_tokens=96", "eval.size=4"]
    warm = ["warm_start.sft_steps=2", "warm_start.traces_per_step=2", "warm_start.questions=4"]
    once = ["eval.final_split=val", "eval.every_steps=1", f"train.output_dir={tmp_path}"]
    args = load("agent_tiny", *QUICK, *settings, *warm, *once)
    GRPOTrainer(args=args).train()
    # untrained (before), step 0 after the warm start, step 1; the export's final evaluation is of
    # step 0 or step 1, both evaluated already
    assert len(calls) == 3
