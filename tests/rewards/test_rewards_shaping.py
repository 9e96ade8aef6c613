"""Shaping rewards: one table per reward, one row per edge case, expected value worked out by hand."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from rewards_helpers import batch

from grpolab.config.schema import RewardsConfig
from grpolab.rewards import build_rewards
from grpolab.rewards.shaping import cosine_scaled, length, reasoning_steps, repetition_penalty, soft_overlong


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1: a\nStep 2: b\nStep 3: c", 1.0),  # three `Step N:` -> 3/3
        ("Step 1: a\nStep 2: b\nStep 3: c\nStep 4: d", 1.0),  # four, capped at 1
        ("Step 1: a", 1 / 3),  # one marker
        ("1. first\n2. second", 1 / 3),  # `^\d+\.` only at the very start (no MULTILINE): one match
        ("First, x. Second, y.", 2 / 3),  # two ordinal words
        ("list:\n- a\n- b\n* c\nFinally, done", 1.0),  # \n- twice, \n* once, Finally, -> 4, capped
        ("first, lower case", 0.0),  # case-sensitive
        ("Step 1 without colon", 0.0),  # needs the colon
        ("- no newline before the dash", 0.0),  # `\n-` needs the newline
        ("", 0.0),  # empty completion
    ],
)
def test_reasoning_steps(text: str, expected: float) -> None:
    assert reasoning_steps([text]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        # max_len 4 and numeric correctness keep the arithmetic by hand: c = cos(pi * L / 4).
        ("42", {}, 0.75),  # correct, L=2: c=0 -> 0.5 + 0.5*(1.0-0.5)*(1+0) = 0.75
        ("4200", {}, -0.5),  # wrong, L=4: c=-1 -> lo = max_value_wrong = -0.5
        ("41", {}, -0.75),  # wrong, L=2: c=0 -> -0.5 + 0.5*(-1.0+0.5)*1 = -0.75
        ("", {}, -1.0),  # wrong (empty), L=0: c=1 -> hi = min_value_wrong = -1.0
        ("", {"min_value_wrong": 0.0}, 0.0),  # the recipe's min_value_wrong=0.0: hi = 0
        (
            "ans = 42",
            {},
            0.5,
        ),  # correct, L=8 > max_len: clamped to 4, c=-1 -> 0.5 (open-r1: cos(2pi)=1 -> 1.0)
        ("x = 41 41", {}, -0.5),  # wrong, L=9 > max_len: clamped -> -0.5 (open-r1: cos(9pi/4) -> -0.60)
        ("42", {"max_value_correct": 2.0}, 1.25),  # c=0: 0.5 + 0.5*(2.0-0.5) = 1.25
    ],
)
def test_cosine_scaled_numeric(text: str, kwargs: dict[str, Any], expected: float) -> None:
    out = cosine_scaled([text], ["42"], max_len=4, correctness="numeric", **kwargs)
    assert out == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("text", "gold", "max_len", "expected"),
    [
        (r"\boxed{42}", "42", 10, 0.5),  # correct, L=10=max_len: c=-1 -> 0.5
        (r"\boxed{42}", "42", 20, 0.75),  # correct, L=10: c=cos(pi/2)=0 -> 0.75
        (r"\boxed{41}", "42", 20, -0.75),  # wrong, L=10: c=0 -> -0.75
        (r"\boxed{42}", "n/a", 20, None),  # unparsable gold -> None (open-r1 gives 1.0)
    ],
)
def test_cosine_scaled_accuracy(text: str, gold: str, max_len: int, expected: float | None) -> None:
    out = cosine_scaled([text], [gold], max_len=max_len)
    assert out == [expected if expected is None else pytest.approx(expected)]


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("", {}, 0.0),  # empty text
        ("a b", {}, 0.0),  # fewer words than n=3
        ("a b c", {}, 0.0),  # one trigram, unique: (1 - 1/1) * -1 = 0
        ("a b c a b c", {}, -0.25),  # abc bca cab abc: 3 unique of 4 -> (1 - 3/4) * -1
        ("A b C a B c", {}, -0.25),  # lower-cased first: same as above
        ("a\n\nb  c\ta b c", {}, -0.25),  # any whitespace splits words: same as above
        ("the the the the the", {}, -2 / 3),  # 3 trigrams, 1 unique: (1 - 1/3) * -1
        ("ha " * 1000, {}, -(1 - 1 / 998)),  # long repetitive text: 998 trigrams, 1 unique
        ("a a b", {"ngram_size": 1, "max_penalty": -0.5}, -1 / 6),  # unigrams: 2 unique of 3 -> 1/3 * -0.5
    ],
)
def test_repetition_penalty(text: str, kwargs: dict[str, Any], expected: float) -> None:
    assert repetition_penalty([text], **kwargs) == [pytest.approx(expected)]


C10, C20, C30 = "x" * 8 + "42", "x" * 18 + "42", "x" * 28 + "42"  # correct, lengths 10, 20, 30
W10, W20, W30 = "x" * 8 + "41", "x" * 18 + "41", "x" * 28 + "41"  # wrong, same lengths


@pytest.mark.parametrize(
    ("texts", "golds", "expected"),
    [
        ([C10, C20, C30], None, [0.5, 0.0, -0.5]),  # lambda = 0.5 - (L - 10)/20
        ([W10, W20, W30], None, [0.0, 0.0, -0.5]),  # wrong: min(0, lambda)
        ([W10, C20, C30], None, [0.0, 0.0, -0.5]),  # the short wrong one gets no bonus
        ([C10, C10, W10], None, [0.0, 0.0, 0.0]),  # all lengths equal -> 0 for all
        (
            [C10, C20, C30],
            ["42", "??", "42"],
            [0.5, None, -0.5],
        ),  # unparsable gold -> None, length still counts
        ([C10], None, [0.0]),  # a batch of one: min == max
    ],
)
def test_length(texts: list[str], golds: list[str] | None, expected: list[float | None]) -> None:
    golds = golds or ["42"] * len(texts)
    assert length(texts, golds, correctness="numeric") == [e if e is None else pytest.approx(e) for e in expected]


def test_length_with_accuracy() -> None:
    short, long = r"\boxed{42}", r"so the answer is \boxed{42}"  # 10 and 27 characters, both correct
    assert length([short, long, "nope"], ["42"] * 3) == [pytest.approx(0.5 - 6 / 23), -0.5, 0.0]
    # min 4 ("nope"), max 27: short 0.5 - 6/23, long -0.5, "nope" wrong: min(0, 0.5) = 0


@pytest.mark.parametrize(
    ("n", "lmax", "cache", "expected"),
    [
        (0, 100, 20, 0.0),  # empty
        (80, 100, 20, 0.0),  # exactly Lmax - C: still no penalty
        (81, 100, 20, -0.05),  # (80 - 81) / 20
        (90, 100, 20, -0.5),  # (80 - 90) / 20
        (100, 100, 20, -1.0),  # exactly Lmax: (80 - 100) / 20
        (101, 100, 20, -1.0),  # beyond Lmax
        (100, 100, 0, 0.0),  # no cache: nothing until Lmax ...
        (101, 100, 0, -1.0),  # ... then -1
    ],
)
def test_soft_overlong(n: int, lmax: int, cache: int, expected: float) -> None:
    assert soft_overlong([n], max_completion_len=lmax, cache=cache) == [pytest.approx(expected)]


def test_soft_overlong_uses_token_lengths_in_a_reward_set() -> None:
    rewards = build_rewards(
        RewardsConfig.model_validate([{"name": "soft_overlong", "max_completion_len": 4, "cache": 2}])
    )
    inputs = batch(["a", "bb", "ccc"])  # completion_ids have 1, 2, 3 tokens
    assert rewards.score(inputs).per_function["soft_overlong"] == [0.0, 0.0, -0.5]
    inputs.completion_lengths = [5, 4, 2]  # explicit token counts win
    assert rewards.score(inputs).per_function["soft_overlong"] == [-1.0, -1.0, 0.0]


def test_cosine_never_rises_past_max_len() -> None:
    # the open-r1 bug we do not reproduce: a wrong answer twice as long as max_len scored like an empty one
    texts = ["x" * n + "41" for n in range(0, 60, 3)]
    values = [v for v in cosine_scaled(texts, ["42"] * len(texts), max_len=20, correctness="numeric") if v is not None]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))  # wrong: rises from -1.0 towards -0.5
    assert math.isclose(values[-1], -0.5)
