"""Pulling a final answer and numbers out of model text, shared by the correctness rewards.

Numbers are compared as exact fractions, so `42.0 == 42`, `2.50 == 2.5` and `3/4 == 0.75` hold
without a float tolerance that would also accept near misses.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A number as people write it: optional sign, thousands groups of exactly three (so a list "1,2,3"
# is three numbers, not 123), decimals. The minus counts only when it does not follow a word or a
# closing bracket, so in "10-3" the last number is 3, not -3.
NUMBER = r"(?:(?<![\w)\]])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?:(?<![\w)\]])-)?\.\d+"
NUMBER_RE = re.compile(NUMBER)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
HASH_LINE_RE = re.compile(r"####[ \t]*([^\n]*)")


def clean(text: str) -> str:
    """Strip what does not change a number's value: commas, `$`, whitespace, one trailing `.`."""
    out = re.sub(r"[,$\s]", "", text)
    return out[:-1] if out.endswith(".") else out


def to_number(text: str) -> Fraction | None:
    """`"1,000"`, `"$-5"`, `"42.0"`, `"3/4"` -> a Fraction; anything else -> None."""
    text = clean(text)
    if not text or len(text) > 100:  # huge literals are not answers, and Fraction would chew on them
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> Fraction | None:
    for match in reversed(NUMBER_RE.findall(text)):
        value = to_number(match)
        if value is not None:
            return value
    return None


def first_number(text: str) -> Fraction | None:
    match = NUMBER_RE.search(text)
    return to_number(match.group(0)) if match else None


def gold_text(answer: str) -> str:
    """GSM8K keeps the final answer after the last `####` (stripped); other golds are used whole."""
    return answer.rsplit("####", 1)[1].strip() if "####" in answer else answer


def gold_number(answer: object) -> Fraction | None:
    if answer is None:
        return None
    return to_number(gold_text(str(answer)))


def final_answer(text: str) -> Fraction | None:
    """The completion's final answer: the last `<answer>…</answer>` body, else the last `#### N`
    line, else the last number anywhere. Within the body or line, the whole string is tried as a
    number first and its last number second (`<answer>x = 5</answer>` -> 5)."""
    bodies = ANSWER_RE.findall(text)
    if bodies:
        return _whole_or_last(bodies[-1])
    lines = HASH_LINE_RE.findall(text)
    if lines:
        return _whole_or_last(lines[-1])
    return last_number(text)


def _whole_or_last(text: str) -> Fraction | None:
    value = to_number(text)
    return value if value is not None else last_number(text)
