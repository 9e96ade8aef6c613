"""Questions from a dataset the user already holds (a `datasets.Dataset`, or a list of dicts), the way
TRL reads them: a "prompt" column, and every other column passed to the rewards by its own name.

    prompt   a string (the user message; data.system_prompt and data.prompt_template apply, as
             for a file's question column) or a list of chat messages (used exactly as given)
    answer   optional: the gold answer of the built-in correctness rewards (also data.answer_column)
    category optional: per-category evaluation breakdowns (also data.category_column)

Our own column names work too: a row without "prompt" uses data.question_column ("question").
Rows are used in order and not deduplicated: the dataset is what the user chose to train on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from grpolab.config.schema import DataConfig
from grpolab.data.base import DataError, Example, check_answer

PROMPT = "prompt"


ROLES = ("system", "developer", "user", "assistant", "tool")


def _messages(value: list[Any], where: str) -> list[dict[str, Any]]:
    """Chat messages checked before any template sees them: a chat template renders an unknown role
    (`<|im_start|>banana`) or a None content ("None") without complaint, and trains on it."""
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise DataError(
                f"{where}: column 'prompt' is a list, so it must be chat messages like "
                f'{{"role": "user", "content": "..."}}; got {message!r}'
            )
        if message["role"] not in ROLES:
            raise DataError(f"{where}: prompt message {i} has role {message['role']!r}; use one of {', '.join(ROLES)}")
        content = message["content"]
        parts = isinstance(content, list) and all(isinstance(p, Mapping) and "type" in p for p in content)
        if not (isinstance(content, str) or parts):
            raise DataError(
                f"{where}: prompt message {i} ({message['role']}) has content {content!r}; it must be a string "
                '(or a list of parts like {"type": "text", "text": "..."})'
            )
    return [dict(message) for message in value]


def _example(row: Mapping[str, Any], data: DataConfig, where: str) -> Example:
    key = PROMPT if PROMPT in row else data.question_column
    if key not in row:
        have = ", ".join(map(str, row)) or "nothing"
        raise DataError(
            f"{where}: no 'prompt' column (a string or a list of chat messages) and no "
            f"'{data.question_column}' column; the row has: {have}"
        )
    value = row[key]
    messages = None
    if isinstance(value, str):
        question = value
    elif isinstance(value, list) and value:
        messages = _messages(value, where)
        users = [str(m["content"]) for m in messages if m["role"] == "user"]
        question = users[-1] if users else str(messages[-1]["content"])
    else:
        raise DataError(f"{where}: column '{key}' must be a string or a list of chat messages, got {value!r}")
    if not question.strip():
        raise DataError(f"{where}: column '{key}' is empty")
    answer = row.get(data.answer_column)
    if answer is not None:
        check_answer(answer, where, data.answer_column)
    category = row.get(data.category_column or "category")
    return Example(
        question=question,
        answer="" if answer is None else str(answer),
        category=data.task if category is None else str(category),
        fields={k: v for k, v in row.items() if k != PROMPT},
        messages=messages,
        where=where,
    )


def examples_from_rows(rows: Iterable[Mapping[str, Any]], data: DataConfig, name: str) -> list[Example]:
    """One Example per row; errors name the argument and the row (counted from 0, as datasets does)."""
    examples = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"{name}: row {index} is a {type(row).__name__}, expected a mapping of columns")
        examples.append(_example(row, data, f"{name}: row {index}"))
    if not examples:
        raise DataError(f"{name}: the dataset has no rows")
    return examples
