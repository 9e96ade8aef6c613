"""User reward functions for the import-path tests (`fn: user_rewards_fixture:...`)."""

from __future__ import annotations

from typing import Any


def shout(completions: list[str], bonus: float = 0.0) -> list[float]:
    """1 + bonus when the completion is upper case, else 0."""
    return [1.0 + bonus if text.isupper() else 0.0 for text in completions]


def by_category(completions: list[str], category: list[str], **kwargs: Any) -> list[float | None]:
    """Receives every keyword: None for category 'skip', else 1."""
    assert "completion_ids" in kwargs and "question" in kwargs
    return [None if c == "skip" else 1.0 for c in category]


NOT_CALLABLE = 3
