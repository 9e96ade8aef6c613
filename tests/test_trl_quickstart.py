"""TRL's GRPO quickstart runs with only its import line changed (the model and dataset swapped for
offline ones, max_steps small), and a user's columns reach the rewards under their own names on
both paths, the command line (a jsonl file, a reward by import path) and the Python API."""

from __future__ import annotations

import json
import sys

import pytest

from grpolab.cli.main import main

# TRL's quickstart (docs, "GRPO Trainer"), as written there but for the marked lines.
QUICKSTART = """
from datasets import Dataset
from grpolab import GRPOConfig, GRPOTrainer  # was: from trl import GRPOConfig, GRPOTrainer

dataset = Dataset.from_dict({"prompt": [f"Summarize post {i}: I moved house." for i in range(64)]})  # was: tldr


# Define the reward function, which rewards completions that are close to 20 characters
def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


training_args = GRPOConfig(output_dir=OUTPUT_DIR, max_steps=2)  # was: output_dir="Qwen2-0.5B-GRPO"
trainer = GRPOTrainer(
    model="tiny",  # was: "Qwen/Qwen2-0.5B-Instruct"
    reward_funcs=reward_len,
    args=training_args,
    train_dataset=dataset,
)
trainer.train()
"""


@pytest.mark.slow
def test_trl_quickstart_runs_with_only_the_import_changed(tmp_path):
    namespace = {"OUTPUT_DIR": str(tmp_path)}
    exec(compile(QUICKSTART, "quickstart.py", "exec"), namespace)
    trainer = namespace["trainer"]
    # 64 rows, no "answer" column, no eval_dataset: all 64 train, nothing is held out or evaluated
    assert len(trainer.trainer.splits.train) == 64 and trainer.trainer.splits.val == []
    (run_dir,) = tmp_path.glob("grpo/*")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["step"] == 2 and not status.get("after")
    assert (run_dir / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_rewards_get_trainer_state_and_can_log(tmp_path):
    from grpolab import GRPOConfig, GRPOTrainer

    seen = []

    def reward_len(completions, trainer_state, log_metric, log_extra, **kwargs):
        seen.append((trainer_state.global_step, trainer_state.max_steps, trainer_state.epoch))
        log_metric("len/mean", sum(len(c) for c in completions) / len(completions))
        log_extra("length", [len(c) for c in completions])
        return [-abs(20 - len(c)) for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, num_generations=4, reward_weights=[0.5]
    )
    trainer = GRPOTrainer(model="tiny", reward_funcs=reward_len, args=args, train_dataset=[{"prompt": "Hi"}] * 4)
    assert trainer.trainer.rewards.weights == [0.5]  # TRL's reward_weights, given in the config
    summary = trainer.train()
    # TRL's state while a step's rewards are scored: the optimizer steps done so far; 2 questions of
    # 4 per step, so epoch 0.5 after the first step
    assert seen == [(0, 2, 0.0), (1, 2, 0.5)]
    lines = [json.loads(line) for line in (summary.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("len/mean" in line for line in lines if "loss" in line)
    sample = json.loads((summary.run_dir / "samples.jsonl").read_text().splitlines()[0])
    assert sample["length"] == len(sample["completion"])


# -- every column by its own name, from the command line and the Python API --------------------------
REWARD_MODULE = """
SEEN = []


def solution_match(completions, problem, solution, level, **kwargs):
    SEEN.extend(zip(problem, solution, level))
    return [float(str(s) in c) for c, s in zip(completions, solution)]
"""
ROWS = [{"problem": f"What is {a} + {b}?", "solution": a + b, "level": f"L{a}"} for a in range(4) for b in range(3)]
COMMON = [
    "data.question_column=problem",
    "data.answer_column=solution",
    "data.train_size=8",
    "data.val_size=2",
    "data.test_size=2",
    "eval.size=2",
    "eval.every_steps=0",
    "train.max_steps=1",
    "logging.quiet=true",
]


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "col_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "col_rewards", raising=False)
    import col_rewards

    return col_rewards


def as_seen(seen: list) -> dict:
    return {problem: (solution, level) for problem, solution, level in seen}


@pytest.mark.slow
def test_every_column_reaches_the_rewards_by_name_on_both_paths(tmp_path, reward_module):
    from grpolab import GRPOConfig, GRPOTrainer

    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    truth = as_seen((r["problem"], r["solution"], r["level"]) for r in ROWS)
    rewards = 'rewards=[{fn: "col_rewards:solution_match"}]'
    cli = ["train", "-c", "quick_test", *COMMON, "data.task=jsonl", f"data.path={data}", rewards]
    # before: "reward 'solution_match' needs 'solution' ... (columns: answer, category, question)"
    assert main([*cli, f"train.output_dir={tmp_path / 'cli'}"]) == 0
    from_cli = as_seen(reward_module.SEEN)
    reward_module.SEEN.clear()

    args = GRPOConfig.load("quick_test", *COMMON, f"train.output_dir={tmp_path / 'api'}")
    trainer = GRPOTrainer(model="tiny", reward_funcs=reward_module.solution_match, train_dataset=ROWS, args=args)
    assert trainer.train().status == "finished"
    from_api = as_seen(reward_module.SEEN)

    # each path saw the file's own values (the int solution stays an int), and both saw the same
    # thing for every question they both drew
    assert from_cli and from_api
    assert all(truth[p] == v for p, v in from_cli.items()) and all(truth[p] == v for p, v in from_api.items())
    assert {p: from_cli[p] for p in from_cli.keys() & from_api.keys()} == {
        p: from_api[p] for p in from_cli.keys() & from_api.keys()
    }
    for run in ("cli", "api"):
        (metrics,) = (tmp_path / run).glob("*/*/metrics.jsonl")
        steps = [json.loads(line) for line in metrics.read_text().splitlines() if '"loss"' in line]
        assert steps and all("rewards/solution_match/mean" in step for step in steps)


@pytest.mark.slow
def test_no_answer_column_with_an_eval_dataset_still_names_the_correctness_reward(tmp_path):
    from grpolab import GRPOConfig, GRPOTrainer
    from grpolab.config.load import ConfigError
    from grpolab.data.base import DataError

    def short(completions, **kwargs):
        return [float(len(c) < 10) for c in completions]

    prompts = [{"prompt": f"Say {i}"} for i in range(8)]
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1)
    with pytest.raises(ConfigError, match=r"eval\.correctness_reward: the built-in 'numeric'"):
        GRPOTrainer(model="tiny", reward_funcs=short, args=args, train_dataset=prompts, eval_dataset=prompts)
    trainer = GRPOTrainer(model="tiny", reward_funcs=short, args=args, train_dataset=prompts)  # nothing to evaluate
    with pytest.raises(DataError, match="nothing to evaluate: pass eval_dataset="):
        trainer.evaluate()
