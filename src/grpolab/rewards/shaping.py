"""Shaping rewards: length, repetition and structure of the reasoning, rather than its answer.

Departures from the originals (each listed in docs/rewards.md):
- `cosine_scaled` clamps the length at `max_len`; open-r1 does not, so its cosine turns back up and
  a very long completion earns as much as a short one.
- `cosine_scaled` and `length` return None when the gold cannot be parsed; open-r1 gives 1.0
  (cosine) or counts the sample as correct (length).
- `cosine_scaled` and `length` can judge correctness with `numeric` instead of math-verify, for tasks
  whose completions end in `<answer>42</answer>` rather than `\\boxed{42}`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from grpolab.rewards.correctness import MATH_TIMEOUT_S, math_correct
from grpolab.rewards.extract import final_answer, gold_number

Correctness = Literal["accuracy", "numeric"]

# open-r1's markers of an explicit step; `^` without MULTILINE: only a numbered line at the very start.
STEP_RE = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)")


def reasoning_steps(completions: list[str]) -> list[float]:
    """open-r1: count step markers (`Step N:`, `1.` at the start, `\\n-`, `\\n*`, `First,` …);
    min(1, count / 3)."""
    return [min(1.0, len(STEP_RE.findall(text)) / 3) for text in completions]


def _correct(text: str, gold: Any, how: Correctness, timeout_s: float) -> bool | None:
    if how == "numeric":
        target = gold_number(gold)
        return None if target is None else final_answer(text) == target
    return math_correct(text, gold, timeout_s)


def cosine_scaled(
    completions: list[str],
    answer: list[Any],
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    max_len: int = 1000,
    correctness: Correctness = "accuracy",
    timeout_s: float = MATH_TIMEOUT_S,
) -> list[float | None]:
    """open-r1 cosine length scaling: short correct answers score most, short wrong ones least.

    L = characters (clamped at max_len), c = cos(pi * L / max_len); correct: lo, hi = min/max_value_correct;
    wrong: lo, hi = max_value_wrong, min_value_wrong; reward = lo + (hi - lo) * (1 + c) / 2.
    Example (defaults): a wrong answer of 500 chars: c = 0, reward = -0.5 + (-1.0 + 0.5) / 2 = -0.75.
    """
    out: list[float | None] = []
    for text, gold in zip(completions, answer):
        correct = _correct(text, gold, correctness, timeout_s)
        if correct is None:
            out.append(None)
            continue
        lo, hi = (min_value_correct, max_value_correct) if correct else (max_value_wrong, min_value_wrong)
        c = math.cos(math.pi * min(len(text), max_len) / max_len)
        out.append(lo + 0.5 * (hi - lo) * (1.0 + c))
    return out


def repetition_penalty(completions: list[str], ngram_size: int = 3, max_penalty: float = -1.0) -> list[float]:
    """open-r1: (1 − unique/total word n-grams) · max_penalty; words are lower-cased whitespace
    splits; empty text or fewer than ngram_size words -> 0."""
    out = []
    for text in completions:
        words = text.lower().split()
        if len(words) < ngram_size:
            out.append(0.0)
            continue
        grams = [tuple(words[i : i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
        out.append((1.0 - len(set(grams)) / len(grams)) * max_penalty)
    return out


def length(
    completions: list[str],
    answer: list[Any],
    correctness: Correctness = "accuracy",
    timeout_s: float = MATH_TIMEOUT_S,
) -> list[float | None]:
    """Kimi 1.5 length reward over the batch: λ = 0.5 − (L − min)/(max − min) in characters;
    correct -> λ, wrong -> min(0, λ); all lengths equal -> 0; unparsable gold -> None.

    Example: lengths 10, 20, 30 -> λ = 0.5, 0, −0.5; if the 10-char one is wrong it keeps
    min(0, 0.5) = 0."""
    lengths = [len(text) for text in completions]
    lo, hi = min(lengths, default=0), max(lengths, default=0)
    out: list[float | None] = []
    for text, gold, n in zip(completions, answer, lengths):
        correct = _correct(text, gold, correctness, timeout_s)
        if correct is None:
            out.append(None)
        elif hi == lo:
            out.append(0.0)
        else:
            lam = 0.5 - (n - lo) / (hi - lo)
            out.append(lam if correct else min(0.0, lam))
    return out


def soft_overlong(
    completion_lengths: list[int], max_completion_len: int | None = None, cache: int | None = None
) -> list[float]:
    """DAPO soft overlong punishment in tokens: L <= Lmax − C -> 0; up to Lmax -> (Lmax − C − L)/C;
    beyond -> −1.

    Example: Lmax = 100, C = 20: L = 80 -> 0; L = 90 -> −0.5; L = 100 -> −1; L = 101 -> −1."""
    if max_completion_len is None or cache is None:
        raise ValueError("soft_overlong needs max_completion_len and cache")
    start = max_completion_len - cache
    out = []
    for n in completion_lengths:
        if n <= start:
            out.append(0.0)
        elif n <= max_completion_len:
            out.append((start - n) / cache)
        else:
            out.append(-1.0)
    return out


def check_soft_overlong(params: dict[str, Any]) -> None:
    lmax, cache = params["max_completion_len"], params["cache"]
    if lmax <= 0:
        raise ValueError(f"max_completion_len must be > 0, got {lmax}")
    if not 0 <= cache <= lmax:
        raise ValueError(f"cache must be in [0, max_completion_len={lmax}], got {cache}")
