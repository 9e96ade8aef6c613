"""Drawing distinct questions from weighted generators (the synthetic tasks' shared engine).

A `Source` is one kind of question (e.g. "addition") with a weight, the exact number of distinct
questions it can produce, and a function that draws one at random. `draw_unique` picks a source by
weight, draws, and keeps only questions it has not seen, until it has `n`.

Why sources know their size: near the end of a small space almost every draw is a repeat. Once a
source has produced all of its questions it is dropped from the choice, so the loop always ends
(when `n` <= the summed sizes, which callers check first with a clear error) and the weights of the
remaining sources are renormalised, which is the natural reading of "uniform over what is left".

The sequence depends only on the seed and the sources, never on `n`: asking for more questions
returns the same prefix plus new ones, which is what keeps test fixed when train grows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from grpolab.data.base import Example, Sizes, Splits, check_space, cut_splits


@dataclass(frozen=True)
class Source:
    name: str
    weight: float
    space: int  # exact number of distinct questions this source can draw
    draw: Callable[[random.Random], Example]


def never(rng: random.Random) -> Example:
    """The draw of a source whose space is 0 (draw_unique skips those, so this never runs)."""
    raise AssertionError("a source with an empty space is never drawn")


def total_space(sources: list[Source]) -> int:
    return sum(s.space for s in sources)


def draw_unique(sources: list[Source], rng: random.Random, n: int) -> list[Example]:
    """The first `n` distinct questions of the seeded stream. Callers check `n <= total_space`."""
    live = [s for s in sources if s.space > 0 and s.weight > 0]
    if len({s.name for s in live}) != len(live):
        raise ValueError(f"source names must be unique: {[s.name for s in live]}")
    seen: set[str] = set()
    made = {s.name: 0 for s in live}
    out: list[Example] = []
    # A miscounted `space` would otherwise loop forever. A draw picks source s with probability
    # weight/total and, while s has anything left, finds a new question with probability >= 1/space,
    # so 50x the slowest source's expected wait is never reached by a correct count.
    total_weight = sum(s.weight for s in live)
    patience = 1000 + 50 * max((s.space * total_weight / s.weight for s in live), default=0)
    misses = 0
    while len(out) < n:
        if not live:
            raise RuntimeError(f"all sources exhausted after {len(out)} of {n} questions")
        source = rng.choices(live, weights=[s.weight for s in live])[0] if len(live) > 1 else live[0]
        example = source.draw(rng)
        if example.question in seen:
            misses += 1
            if misses > patience:
                raise RuntimeError(f"source {source.name!r} repeats itself; its space is miscounted")
            continue
        misses = 0
        seen.add(example.question)
        out.append(example)
        made[source.name] += 1
        if made[source.name] >= source.space:
            live = [s for s in live if s is not source]
    return out


def synthetic_splits(sources: list[Source], seed: int, sizes: Sizes, what: str, hint: str) -> Splits:
    """Check the space, draw `sizes.total` distinct questions, and cut test, val, train."""
    check_space(total_space(sources), sizes, what, hint)
    return cut_splits(draw_unique(sources, random.Random(seed), sizes.total), sizes)
