"""Agent runs end to end on the embedded model: masked vs full loss masks, metrics, samples."""

from __future__ import annotations

import json

import pytest

from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from run_helpers import QUICK, read_metrics

pytestmark = pytest.mark.slow


def agent_config(tmp_path, mode: str):
    return load_config(
        "agent_tiny",
        [
            *QUICK,
            f"agent.mode={mode}",
            "train.max_steps=2",
            "generation.max_new_tokens=96",
            "agent.max_turns=2",
            "eval.size=4",
            "data.test_size=4",
            "logging.sample_every=1",
            "logging.samples_per_step=4",
            f"train.output_dir={tmp_path / mode}",
        ],
        env_file=None,
        environ={},
    )


@pytest.mark.parametrize("mode", ["masked", "full"])
def test_agent_run_logs_tool_metrics_and_trained_spans(tmp_path, mode):
    summary = GRPOTrainer(args=agent_config(tmp_path, mode)).train()
    rows = [r for r in read_metrics(summary.run_dir) if "loss" in r]
    assert rows
    for key in ("tools/call_frequency", "tools/failure_frequency", "turns/mean", "tokens/masked_fraction"):
        assert key in rows[0], key
    samples = [json.loads(line) for line in (summary.run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and all("messages" in s and "spans" in s for s in samples)
    for sample in samples:
        prompt, *completion = sample["spans"]  # the prompt is one untrained span
        assert not prompt["trained"] and "<|im_start|>user" in prompt["text"]
        trained_text = "".join(span["text"] for span in completion if span["trained"])
        untrained_text = "".join(span["text"] for span in completion if not span["trained"])
        if mode == "masked":
            # tool results and the template glue around them are never trained
            assert "<|im_start|>tool" not in trained_text
            if any(m["role"] == "tool" for m in sample["messages"]):
                assert "<|im_start|>tool" in untrained_text
        else:  # the naive baseline trains every completion token, tool output included
            assert untrained_text == ""
    if mode == "masked":
        tool_rows = [r for r in rows if r["tools/call_frequency"] > 0]
        assert all(r["tokens/masked_fraction"] > 0 for r in tool_rows)


class CalculatorTask:
    """A TRL-style environment (methods as tools, reset, get_reward) that the tiny agent can use:
    it was warm-started on `calculator` calls."""

    def reset(self, answer: str, **kwargs: object) -> None:
        self.answer, self.results = answer, []

    def get_reward(self) -> float:
        return float(self.answer in self.results)

    def calculator(self, expression: str) -> str:
        """Evaluate an arithmetic expression.

        Args:
            expression: The expression, e.g. 12*34.
        """
        from grpolab.envs.calculator import evaluate, format_number

        self.results.append(format_number(evaluate(expression)))
        return self.results[-1]


def test_a_trl_environment_class_trains_through_environment_factory(tmp_path):
    rows = [{"prompt": f"What is {a} * {b}?", "answer": str(a * b)} for a in range(11, 17) for b in range(21, 25)]
    settings = ["train.max_steps=2", "agent.max_turns=2", "generation.max_new_tokens=96", "eval.size=4"]
    args = load_config("agent_tiny", [*QUICK, *settings, f"train.output_dir={tmp_path}"], env_file=None, environ={})
    trainer = GRPOTrainer(model="tiny-agent", environment_factory=CalculatorTask, train_dataset=rows, args=args)
    assert trainer.args.agent.enabled and trainer.trainer.rewards.labels == ["CalculatorTask"]
    summary = trainer.train()
    rows_logged = [r for r in read_metrics(summary.run_dir) if "loss" in r]
    assert [r["step"] for r in rows_logged] == [1, 2]
    for row in rows_logged:
        assert 0.0 <= row["rewards/CalculatorTask/mean"] <= 1.0  # get_reward(), logged under the class name
        assert row["tools/calculator/calls"] > 0  # the tiny agent calls the method as its calculator tool


def test_readme_tools_section_runs_both_styles(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Tools and environments (TRL's API)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README has no python block under 'Tools and environments (TRL's API)'"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    assert namespace["trl_style"].trainer.rewards.labels == ["CalculatorTask"]
    assert namespace["grpolab_style"].args.agent.enabled
    rows = [r for r in read_metrics(namespace["trl_style"].trainer.run_dir) if "loss" in r]
    assert len(rows) == 2 and "rewards/CalculatorTask/mean" in rows[0]
