"""Shared helpers of the reward tests (this folder is on sys.path under pytest's rootdir import mode)."""

from __future__ import annotations

from typing import Any

from grpolab.rewards import RewardInputs


def batch(completions: list[str], answers: list[str] | None = None, **extra: list[Any]) -> RewardInputs:
    """A batch with one dataset row per completion (gold '42' unless given); extra columns by name."""
    answers = answers or ["42"] * len(completions)
    rows: list[dict[str, Any]] = [{"question": "q", "answer": a, "category": "c"} for a in answers]
    for key, values in extra.items():
        for row, value in zip(rows, values):
            row[key] = value
    ids = [[1] * len(c) for c in completions]
    return RewardInputs(prompts=["q"] * len(completions), completions=completions, completion_ids=ids, rows=rows)
