"""Gold assistant turns for an episode: what a warm start imitates before RL (train/warm_start.py).

A gold-turns function takes a dataset row (the environment's row: question, answer, ...) and returns
the assistant messages of a correct episode, as text without end-of-turn, or None when it cannot
script that row (the row is then left out of the warm start). Built in: `calculator`. Your own:
`warm_start.gold_turns: "pkg.module:function"`, with the same signature.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from typing import Any

from grpolab.envs.calculator import evaluate, format_number
from grpolab.envs.tools import ToolError

GoldTurns = Callable[[dict[str, Any]], list[str] | None]

# An arithmetic expression inside a question: numbers joined by binary operators ("What is 12 * 34?").
_EXPRESSION = re.compile(r"\d+(?:\.\d+)?(?:\s*(?:\*\*|//|[-+*/%])\s*\(?-?\d+(?:\.\d+)?\)?)+")
ANSWER_TEMPLATE = "<answer>{answer}</answer>"


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a.strip() == b.strip()


def calculator(row: dict[str, Any]) -> list[str] | None:
    """One calculator call on the row's `expression` column (else the first arithmetic expression in
    its question), then the tool's result as the answer in the <answer> format. None when there is no
    expression or the calculator's result differs from the gold answer (no trace teaches a wrong one).

    >>> calculator({"question": "What is 12 * 34?", "answer": "408"})[1]
    '<answer>408</answer>'
    """
    source = row.get("expression") or row.get("question") or ""
    match = _EXPRESSION.search(str(source))
    if match is None:
        return None
    expression = match.group(0)
    try:
        result = format_number(evaluate(expression))
    except ToolError:
        return None
    if not _same_number(result, str(row.get("answer", ""))):
        return None
    call = json.dumps({"name": "calculator", "arguments": {"expression": expression}})
    return [f"<tool_call>{call}</tool_call>", ANSWER_TEMPLATE.format(answer=result)]


BUILTIN_GOLD_TURNS: dict[str, GoldTurns] = {"calculator": calculator}


def load_gold_turns(name: str) -> GoldTurns:
    """A built-in name or "pkg.module:function"; ValueError (naming warm_start.gold_turns) otherwise."""
    if name in BUILTIN_GOLD_TURNS:
        return BUILTIN_GOLD_TURNS[name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        known = ", ".join(BUILTIN_GOLD_TURNS)
        raise ValueError(f"warm_start.gold_turns: unknown {name!r}; built-ins: {known}, or 'pkg.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"warm_start.gold_turns: cannot import {name!r}: {err}") from err
    if not callable(fn):
        raise ValueError(f"warm_start.gold_turns: {name!r} is not a function")
    return fn  # type: ignore[no-any-return]
