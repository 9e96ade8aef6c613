"""What every task produces: questions with gold answers and a category, split three ways.

Every task cuts its splits in the same order, test first, then val, then train, from one seeded
sequence. Growing `train_size` therefore never moves a question into or out of test or val, so
numbers measured on test stay comparable across runs that differ only in how much they train.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpolab.errors import UserError


class DataError(UserError, ValueError):
    """A dataset problem (missing file, empty split, a row without the configured columns)."""


@dataclass(frozen=True)
class Example:
    """One question. `fields` holds the dataset row's other columns; rewards receive them by name."""

    question: str
    answer: str
    category: str
    fields: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None  # a conversational prompt, used as given
    where: str = field(default="", compare=False, repr=False)  # "data.path x.jsonl: row 7", for errors

    @property
    def prompt(self) -> Any:
        """The prompt as the dataset gave it (TRL's `prompts`): chat messages, else the question."""
        return self.messages if self.messages is not None else self.question

    def row(self) -> dict[str, Any]:
        """The columns a reward function sees, by name: the dataset's own, then question, answer and
        category, the configured columns' values (they win over a dataset column of the same name)."""
        return {**self.fields, "question": self.question, "answer": self.answer, "category": self.category}


def check_answer(value: Any, where: str, column: str) -> None:
    """A gold answer no reward can match fails here, naming the row: a list, dict or bool would be
    stringified ('[12, 0]', 'True'), and a non-finite number (JSON's 1e400 or NaN, a CSV's "inf")
    parses to inf/nan, which no completion equals: every sample would score None and the run would
    learn nothing."""
    if isinstance(value, (bool, list, dict)):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise DataError(
            f"{where}: column '{column}' holds a {type(value).__name__} ({shown}); the gold answer must be "
            "a string or a number (convert the column, or point data.answer_column at one that is)"
        )
    try:
        number = float(value) if isinstance(value, (int, float, str)) else 0.0
    except (ValueError, OverflowError):
        return  # text that is not a number: a fine answer
    if not math.isfinite(number):
        raise DataError(
            f"{where}: column '{column}' holds {value!r}, which is not a finite number (no completion can "
            "match it); fix or drop the row"
        )


def check_reward_columns(examples: Iterable[Example], needs: dict[str, list[str]]) -> None:
    """Every row has every column a reward needs ({reward label: [column, ...]}); else one line naming
    the first row without it (a reward would otherwise get None there, mid-run, and crash on it).
    'answer' counts as missing when empty: rows without one get "" in that column."""
    for example in examples:
        row = {**example.fields, "question": example.question, "category": example.category}
        if example.answer:
            row["answer"] = example.answer
        for label, columns in needs.items():
            for column in columns:
                if column not in row:
                    have = ", ".join(sorted(row)) or "nothing"
                    raise DataError(
                        f"{example.where or 'a row'}: no column '{column}', which reward '{label}' needs "
                        f"(the row has: {have})"
                    )


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
