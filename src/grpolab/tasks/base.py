"""What every task produces: questions with gold answers and a category, split three ways."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class DataError(ValueError):
    """A dataset problem (missing file, empty split, a row without the configured columns)."""


@dataclass(frozen=True)
class Example:
    """One question. `fields` holds the dataset row's other columns; rewards receive them by name."""

    question: str
    answer: str
    category: str
    fields: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The columns a reward function sees, by name (question, answer, category, extras)."""
        return {**self.fields, "question": self.question, "answer": self.answer, "category": self.category}


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            if not getattr(self, name):
                raise DataError(f"the {name} split is empty: the dataset has too few distinct questions")
