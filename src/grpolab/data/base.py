"""What every task produces: questions with gold answers and a category, split three ways.

Every task cuts its splits in the same order, test first, then val, then train, from one seeded
sequence. Growing `train_size` therefore never moves a question into or out of test or val, so
numbers measured on test stay comparable across runs that differ only in how much they train.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    messages: list[dict[str, Any]] | None = None  # a conversational prompt, used as given

    @property
    def prompt(self) -> Any:
        """The prompt as the dataset gave it (TRL's `prompts`): chat messages, else the question."""
        return self.messages if self.messages is not None else self.question

    def row(self) -> dict[str, Any]:
        """The columns a reward function sees, by name: the dataset's own, then question, answer and
        category, the configured columns' values (they win over a dataset column of the same name)."""
        return {**self.fields, "question": self.question, "answer": self.answer, "category": self.category}


@dataclass(frozen=True)
class Splits:
    """train, val, test. val and test are empty only for a user's dataset with nothing held out
    (the Python API without eval_dataset, as TRL): the run then trains without evaluating."""

    train: list[Example]
    val: list[Example]
    test: list[Example]

    def __post_init__(self) -> None:
        if not self.train:
            raise DataError("the train split is empty: the dataset has too few distinct questions")
        if bool(self.val) != bool(self.test):
            raise DataError(f"the {'val' if not self.val else 'test'} split is empty but the other is not")

    @property
    def evaluates(self) -> bool:
        return bool(self.val)


@dataclass(frozen=True)
class Sizes:
    """How many questions each split asks for."""

    train: int
    val: int
    test: int

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


def check_space(available: int, sizes: Sizes, what: str, hint: str) -> None:
    """Raise a DataError naming the field to lower when `available` distinct questions are too few.

    `what` describes the source ("task 'arithmetic' (numbers 0..20, operations + -)"), `hint` says
    what else the user can change. Test and val are served first, so train is the field named
    unless test + val alone do not fit.
    """
    if sizes.total <= available:
        return
    held_out = sizes.test + sizes.val
    if held_out >= available:
        raise DataError(
            f"data.test_size ({sizes.test}) + data.val_size ({sizes.val}) = {held_out}, but {what} "
            f"has only {available} distinct questions and train needs at least one; "
            f"lower data.test_size / data.val_size. {hint}".rstrip()
        )
    raise DataError(
        f"data.train_size ({sizes.train}) is too large: {what} has only {available} distinct "
        f"questions, and test_size ({sizes.test}) + val_size ({sizes.val}) leave {available - held_out} "
        f"for training; lower data.train_size to at most {available - held_out}. {hint}".rstrip()
    )


def cut_splits(examples: Sequence[Example], sizes: Sizes) -> Splits:
    """Cut test, val, then train from the front of an already shuffled, duplicate-free sequence."""
    test_end = sizes.test
    val_end = test_end + sizes.val
    return Splits(
        train=list(examples[val_end : val_end + sizes.train]),
        val=list(examples[test_end:val_end]),
        test=list(examples[:test_end]),
    )
