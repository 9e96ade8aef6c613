"""Agent runs end to end on the embedded model: masked vs full loss masks, metrics, samples."""

from __future__ import annotations

import json

import pytest

from grpolab.api import GRPOTrainer
from grpolab.config.load import load_config
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
