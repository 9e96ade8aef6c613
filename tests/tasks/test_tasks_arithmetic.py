"""Arithmetic and small_numbers: every answer recomputed from the question text, and the space of
distinct questions counted exactly (the sampler relies on that count to stop)."""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from grpolab.config.schema import DataConfig
from grpolab.data import DataError, build_splits, validate_data
from grpolab.data.arithmetic import CATEGORY, division_drawer, division_space

QUESTION = re.compile(r"What is (-?\d+) ([-+*/]) (-?\d+)\?")


def parse(question: str) -> tuple[int, str, int]:
    match = QUESTION.fullmatch(question)
    assert match, question
    return int(match[1]), match[2], int(match[3])


def exact(a: int, op: str, b: int) -> Fraction:
    if op == "/":
        return Fraction(a, b)
    return Fraction({"+": a + b, "-": a - b, "*": a * b}[op])


def all_examples(data: DataConfig, seed: int = 0):
    splits = build_splits(data, seed)
    return splits.train + splits.val + splits.test


@pytest.mark.parametrize(("lo", "hi"), [(0, 20), (-15, 7), (3, 40), (-9, -2)])
def test_every_answer_is_correct_and_operands_in_range(lo: int, hi: int) -> None:
    data = DataConfig(min_num=lo, max_num=hi, train_size=120, val_size=20, test_size=30)
    examples = all_examples(data)
    for example in examples:
        a, op, b = parse(example.question)
        assert lo <= a <= hi and lo <= b <= hi, example
        value = exact(a, op, b)
        assert value.denominator == 1, f"non-integer answer: {example}"  # division is exact
        assert example.answer == str(value.numerator), example
        assert example.category == CATEGORY[op]


def test_division_answers_are_integers_and_nonzero_divisor() -> None:
    data = DataConfig(operations=["/"], min_num=-12, max_num=30, train_size=100, val_size=10, test_size=10)
    for example in all_examples(data):
        a, op, b = parse(example.question)
        assert op == "/" and b != 0
        assert a % b == 0 and example.answer == str(a // b)
        assert int(example.answer) in range(-12, 31)  # the quotient is in range too


def brute_division(lo: int, hi: int) -> set[str]:
    return {
        f"What is {a} / {b}?"
        for a in range(lo, hi + 1)
        for b in range(lo, hi + 1)
        if b != 0 and a % b == 0 and lo <= a // b <= hi
    }


@pytest.mark.parametrize(("lo", "hi"), [(0, 10), (0, 20), (-3, 4), (3, 20), (-9, -1), (-5, 0), (1, 1)])
def test_division_space_matches_brute_force(lo: int, hi: int) -> None:
    assert division_space(lo, hi) == len(brute_division(lo, hi))


def test_whole_division_space_is_drawn_exactly() -> None:
    # Asking for every distinct question must return exactly the brute-force set (and terminate).
    expected = brute_division(-4, 9)
    data = DataConfig(operations=["/"], min_num=-4, max_num=9, test_size=5, val_size=5)
    data = data.model_copy(update={"train_size": len(expected) - 10})
    assert {e.question for e in all_examples(data)} == expected


def test_small_numbers_ignores_min_max_and_uses_0_to_10() -> None:
    data = DataConfig(task="small_numbers", min_num=50, max_num=90, train_size=300, val_size=50, test_size=50)
    examples = all_examples(data)
    assert len(examples) == 400  # the whole space: 121 each for + - *, 37 for /
    for example in examples:
        a, op, b = parse(example.question)
        assert 0 <= a <= 10 and 0 <= b <= 10
        assert example.answer == str(exact(a, op, b).numerator)


def test_operations_sampled_uniformly() -> None:
    # 0..1000 has ~8000 divisions, so few draws repeat and each op keeps close to its quarter.
    data = DataConfig(min_num=0, max_num=1000, train_size=2000, val_size=100, test_size=100)
    counts = {cat: 0 for cat in CATEGORY.values()}
    for example in all_examples(data):
        counts[example.category] += 1
    assert all(480 <= n <= 620 for n in counts.values()), counts  # 550 expected each, sd ~20


def test_space_too_small_names_field_and_number() -> None:
    data = DataConfig(task="small_numbers", train_size=101, val_size=100, test_size=200)
    with pytest.raises(DataError, match=r"data\.train_size.*only 400 distinct.*at most 100"):
        validate_data(data)
    with pytest.raises(DataError, match=r"data\.train_size"):
        build_splits(data, 0)


def test_held_out_too_large_names_test_and_val() -> None:
    data = DataConfig(operations=["/"], min_num=0, max_num=10, train_size=1, val_size=20, test_size=17)
    with pytest.raises(DataError, match=r"data\.test_size \(17\) \+ data\.val_size \(20\).*only 37"):
        validate_data(data)


def test_no_operations_is_an_error() -> None:
    # the config rejects an empty list itself; validate_data still guards configs built without validation
    with pytest.raises(ValueError, match=r"operations"):
        DataConfig(operations=[], train_size=10, val_size=5, test_size=5)
    with pytest.raises(DataError, match=r"data\.operations"):
        validate_data(DataConfig.model_construct(**{**DataConfig().model_dump(), "operations": []}))


def test_repeated_operation_counts_once() -> None:
    data = DataConfig(task="small_numbers", operations=["/", "/"], train_size=30, val_size=5, test_size=2)
    validate_data(data)  # 37 distinct, not 74
    with pytest.raises(DataError, match="only 37"):
        validate_data(data.model_copy(update={"train_size": 31}))


def test_division_uniform_over_distinct_questions() -> None:
    # Like + - * over (a, b) pairs, so a small space is not mostly "0 / b" and "1 / 1"-style repeats.
    draw = division_drawer(0, 10)
    rng = random.Random(0)
    counts = Counter(draw(rng).question for _ in range(37 * 200))
    assert set(counts) == brute_division(0, 10)
    assert all(130 <= n <= 270 for n in counts.values()), counts.most_common(3)  # 200 expected, sd 14
