"""The mixed task: arithmetic, counting and comparison, each answer recomputed from its text."""

from __future__ import annotations

import re
from collections import Counter

from grpolab.config.schema import DataConfig
from grpolab.data import build_splits
from grpolab.data.mixed import ITEMS, WORDS

ARITH = re.compile(r"What is (-?\d+) ([-+*/]) (-?\d+)\?")
LETTERS = re.compile(r"How many times does the letter '([a-z])' appear in '([a-z]+)'\?")
ITEM_LIST = re.compile(r"How many items are in this list: (.+)\?")
COMPARE = re.compile(r"Which is larger, (-?\d+) or (-?\d+)\?")
FAMILY = {
    "add": "arithmetic",
    "sub": "arithmetic",
    "mul": "arithmetic",
    "div": "arithmetic",
    "count_letters": "count",
    "count_items": "count",
    "compare": "compare",
}


def recompute(question: str) -> tuple[str, str]:
    """(category, answer) worked out from the question text alone."""
    if m := ARITH.fullmatch(question):
        a, op, b = int(m[1]), m[2], int(m[3])
        if op == "/":
            assert b != 0 and a % b == 0
            return "div", str(a // b)
        return {"+": "add", "-": "sub", "*": "mul"}[op], str({"+": a + b, "-": a - b, "*": a * b}[op])
    if m := LETTERS.fullmatch(question):
        letter, word = m[1], m[2]
        assert word in WORDS
        return "count_letters", str(sum(ch == letter for ch in word))
    if m := ITEM_LIST.fullmatch(question):
        items = m[1].split(", ")
        assert set(items) <= set(ITEMS)
        return "count_items", str(len(items))
    if m := COMPARE.fullmatch(question):
        a, b = int(m[1]), int(m[2])
        assert a != b, question  # never equal numbers
        return "compare", str(max(a, b))
    raise AssertionError(f"unexpected question: {question}")


def test_every_answer_and_category_is_correct() -> None:
    data = DataConfig(task="mixed", min_num=-5, max_num=30, train_size=600, val_size=50, test_size=50)
    splits = build_splits(data, 1)
    examples = splits.train + splits.val + splits.test
    for example in examples:
        assert recompute(example.question) == (example.category, example.answer), example
    assert set(FAMILY) == {e.category for e in examples}  # every category present


def test_roughly_equal_thirds() -> None:
    # A wide range, so that no part runs out of distinct questions and the weights show.
    data = DataConfig(task="mixed", min_num=0, max_num=500, train_size=1500, val_size=50, test_size=50)
    families = Counter(FAMILY[e.category] for e in build_splits(data, 2).train)
    assert all(400 <= n <= 600 for n in families.values()), families  # 500 expected each


def test_counting_includes_absent_letters() -> None:
    # Zero is a legitimate answer the model must learn, so some letters do not occur in the word.
    data = DataConfig(task="mixed", train_size=600, val_size=50, test_size=50)
    answers = {e.answer for e in build_splits(data, 0).train if e.category == "count_letters"}
    assert "0" in answers and len(answers) >= 3
