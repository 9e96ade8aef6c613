"""Tasks: questions with gold answers and categories, split train/val/test, and their prompts.

    build_splits(data, seed)      -> Splits (deterministic in seed; splits disjoint by question)
    build_messages(example, data) -> chat messages (system prompt, then the templated question)
    default_system_prompt(task)   -> the task's system prompt when data.system_prompt is unset
    validate_data(data)           -> raises DataError before any model loads

One module per task family: arithmetic (also small_numbers), mixed, gsm8k, generic (jsonl, hf).
"""

from __future__ import annotations

from grpolab.config.schema import DataConfig
from grpolab.data import arithmetic, generic, gsm8k, mixed
from grpolab.data.base import DataError, Example, Sizes, Splits, check_space
from grpolab.data.prompts import build_messages, check_template, default_system_prompt

__all__ = [
    "DataError",
    "Example",
    "Splits",
    "build_messages",
    "build_splits",
    "default_system_prompt",
    "validate_data",
]


def _sizes(data: DataConfig, val_size: int | None) -> Sizes:
    return Sizes(train=data.train_size, val=data.val_size if val_size is None else val_size, test=data.test_size)


def build_splits(data: DataConfig, seed: int, val_size: int | None = None) -> Splits:
    """The task's train/val/test splits. `val_size` overrides data.val_size when given.

    Same seed, same splits; test is cut first and val second, so changing train_size never changes
    them. No question appears twice, within or across splits.
    """
    sizes = _sizes(data, val_size)
    if data.task in ("arithmetic", "small_numbers"):
        return arithmetic.build(data, seed, sizes)
    if data.task == "mixed":
        return mixed.build(data, seed, sizes)
    if data.task == "gsm8k":
        return gsm8k.build(data, seed, sizes)
    return generic.build(data, seed, sizes)


def validate_data(data: DataConfig) -> None:
    """Cheap checks that would otherwise fail after the model has loaded: the prompt template, the
    synthetic space against the requested sizes, a local file's rows and columns, and (for hub
    datasets) that the hub can be reached, within 3 seconds."""
    check_template(data.prompt_template)
    default_system_prompt(data.task)
    sizes = _sizes(data, None)
    if data.task in ("arithmetic", "small_numbers"):
        if not data.operations:
            raise DataError("data.operations is empty: give at least one of + - * /")
        check_space(arithmetic.space(data), sizes, *arithmetic.describe(data))
    elif data.task == "mixed":
        check_space(mixed.space(data), sizes, mixed.describe(data), "")
    elif data.task == "gsm8k":
        gsm8k.validate(data, sizes)
    else:
        generic.validate(data, sizes)
