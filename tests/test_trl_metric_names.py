"""Metric keys that mean what TRL's mean: `num_tokens` is the running total of tokens seen."""

from __future__ import annotations

import itertools

import pytest

from grpolab.api import GRPOTrainer
from run_helpers import quick_config, read_metrics

pytestmark = pytest.mark.slow


def test_num_tokens_is_cumulative_as_in_trl(tmp_path):
    summary = GRPOTrainer(args=quick_config(tmp_path, "eval.every_steps=0")).train()
    rows = [r for r in read_metrics(summary.run_dir) if "tokens/total" in r]
    assert len(rows) == 3
    # TRL: num_input_tokens_seen += prompt + completion tokens of the step; logged as num_tokens
    running = list(itertools.accumulate(r["tokens/total"] for r in rows))
    assert [r["num_tokens"] for r in rows] == running
    assert running[0] < running[1] < running[2]
