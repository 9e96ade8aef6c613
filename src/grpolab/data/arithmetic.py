"""Arithmetic questions: "What is 7 * 3?" -> "21", with integer answers only.

Each operation is one `Source` of equal weight, so operations are sampled uniformly, then operands
uniformly in [min_num, max_num]. Division is generated backwards, as a divisor b != 0 and a
quotient q with a = b * q also in range, so every answer is an integer and both printed operands
respect the configured range; (b, q) is uniform over all such pairs. `small_numbers` is the same
task pinned to 0..10, whose whole space is 400 questions (121 each for + - *, 37 for /).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable

from grpolab.config.schema import DataConfig
from grpolab.data.base import Example, Sizes, Splits
from grpolab.data.draw import Source, never, synthetic_splits, total_space

CATEGORY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
SMALL_RANGE = (0, 10)

# Spaces beyond this are reported as this: no run gets near exhausting them, and counting the
# division pairs of a huge range exactly would cost time for nothing.
SPACE_CAP = 10**9
ENUMERATE_LIMIT = 10**6  # division pairs listed for uniform sampling up to this many


def number_range(data: DataConfig) -> tuple[int, int]:
    return SMALL_RANGE if data.task == "small_numbers" else (data.min_num, data.max_num)


def operations(data: DataConfig) -> list[str]:
    """The configured operations, each once (a repeated op would count its questions twice)."""
    return list(dict.fromkeys(data.operations))


def divisor_ranges(lo: int, hi: int) -> list[range]:
    """Divisors b (non-zero, in range) for which some quotient q keeps q and b*q in [lo, hi]."""
    if lo <= 0 <= hi:
        return [range(lo, 0), range(1, hi + 1)]  # q = 0 works for every b
    if lo > 0:
        return [range(lo, hi // lo + 1)]  # q >= lo and b*q <= hi force b <= hi // lo
    return []  # all negative: b*q of two negatives is positive, out of range


def quotient_range(b: int, lo: int, hi: int) -> tuple[int, int]:
    """Inclusive bounds of q in [lo, hi] with lo <= b*q <= hi (empty when first > second)."""
    # Python's // floors for either sign, so floor(x/b) = x // b and ceil(x/b) = -(-x // b).
    if b > 0:
        q_lo, q_hi = -(-lo // b), hi // b
    else:
        q_lo, q_hi = -(-hi // b), lo // b
    return max(q_lo, lo), min(q_hi, hi)


def division_space(lo: int, hi: int, cap: int = SPACE_CAP) -> int:
    """Number of distinct (b, q) pairs, counted up to `cap`.

    Each range is walked from its end nearest zero: b = +-1 adds the most pairs (about n/|b| each),
    so a huge range reaches the cap within a few thousand divisors instead of walking all of them.
    """
    count = 0
    for r in divisor_ranges(lo, hi):
        for b in reversed(r) if r.start < 0 else r:
            q_lo, q_hi = quotient_range(b, lo, hi)
            count += q_hi - q_lo + 1
            if count >= cap:
                return cap
    return count


def _space(op: str, lo: int, hi: int) -> int:
    if op == "/":
        return division_space(lo, hi)
    return min((hi - lo + 1) ** 2, SPACE_CAP)


def _question(a: int, op: str, b: int, answer: int) -> Example:
    return Example(question=f"What is {a} {op} {b}?", answer=str(answer), category=CATEGORY[op])


def division_drawer(lo: int, hi: int) -> Callable[[random.Random], Example]:
    """Draws "a / b" uniformly over the distinct (b, q) pairs, like + - * are over (a, b) pairs.

    Uniform over pairs needs the number of quotients of each divisor, listed once here. Beyond
    ENUMERATE_LIMIT pairs (ranges wider than about 0..80000) that list would cost more than it is
    worth, so a divisor is drawn uniformly and then a quotient: questions there lean towards large
    divisors with small quotients, but repeats stay rare, which is what the sampler needs.
    """
    if division_space(lo, hi, cap=ENUMERATE_LIMIT + 1) > ENUMERATE_LIMIT:
        ranges = divisor_ranges(lo, hi)

        def divisor_then_quotient(rng: random.Random) -> Example:
            pick = rng.randrange(sum(len(r) for r in ranges))
            for r in ranges:  # a uniform divisor across the ranges, without listing them
                if pick < len(r):
                    break
                pick -= len(r)
            b = r[pick]
            q = rng.randint(*quotient_range(b, lo, hi))
            return _question(b * q, "/", b, q)

        return divisor_then_quotient
    divisors: list[int] = []
    ends: list[int] = []  # ends[i] = pairs whose divisor is divisors[0..i]
    for r in divisor_ranges(lo, hi):
        for b in r:
            q_lo, q_hi = quotient_range(b, lo, hi)
            divisors.append(b)
            ends.append((ends[-1] if ends else 0) + q_hi - q_lo + 1)

    def uniform_pair(rng: random.Random) -> Example:
        k = rng.randrange(ends[-1])
        i = bisect.bisect_right(ends, k)
        b = divisors[i]
        q = quotient_range(b, lo, hi)[0] + k - (ends[i - 1] if i else 0)
        return _question(b * q, "/", b, q)

    return uniform_pair


def draw(op: str, lo: int, hi: int, rng: random.Random) -> Example:
    """One random question of operation `op` (+ - *) with operands uniform in [lo, hi]."""
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return _question(a, op, b, result)


def sources(ops: list[str], lo: int, hi: int, weight: float = 1.0) -> list[Source]:
    """One source per operation, sharing `weight` equally (uniform over operations)."""

    def drawer(op: str) -> Callable[[random.Random], Example]:
        if op == "/":
            return division_drawer(lo, hi) if _space(op, lo, hi) else never
        return lambda rng: draw(op, lo, hi, rng)  # a function call binds `op` now, not at draw time

    return [Source(CATEGORY[op], weight / len(ops), _space(op, lo, hi), drawer(op)) for op in ops]


def describe(data: DataConfig) -> tuple[str, str]:
    """The source description and fix-it hint used in size errors."""
    lo, hi = number_range(data)
    what = f"task '{data.task}' (numbers {lo}..{hi}, operations {' '.join(operations(data))})"
    if data.task == "small_numbers":
        return what, "small_numbers always uses 0..10; task=arithmetic with a wider data.max_num has more."
    return what, "Or widen data.min_num..data.max_num, or add data.operations."


def build(data: DataConfig, seed: int, sizes: Sizes) -> Splits:
    lo, hi = number_range(data)
    what, hint = describe(data)
    return synthetic_splits(sources(operations(data), lo, hi), seed, sizes, what, hint)


def space(data: DataConfig) -> int:
    """Distinct questions the configured task can produce (capped at SPACE_CAP per operation)."""
    ops = operations(data)
    return total_space(sources(ops, *number_range(data))) if ops else 0
