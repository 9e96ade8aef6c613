"""The distinct-question sampler shared by the synthetic tasks."""

from __future__ import annotations

import itertools
import random

import pytest

from grpolab.data.base import Example
from grpolab.data.draw import Source, draw_unique


def counting_source(name: str, weight: float, space: int, calls: list[int]) -> Source:
    """Draws uniformly from `space` distinct questions, counting its calls."""

    def draw(rng: random.Random) -> Example:
        calls.append(1)
        return Example(question=f"{name} {rng.randrange(space)}", answer="0", category=name)

    return Source(name, weight, space, draw)


def test_exhausted_source_is_dropped_not_redrawn() -> None:
    # "tiny" has one question but 1000x the weight: drawn again and again it would make ~1000
    # repeats per new question; dropped once used up, the other source takes over at once.
    calls: list[int] = []
    sources = [counting_source("tiny", 1000, 1, calls), counting_source("big", 1, 10**9, calls)]
    out = draw_unique(sources, random.Random(0), 50)
    assert len({e.question for e in out}) == 50
    assert sum(e.category == "tiny" for e in out) == 1
    assert len(calls) < 60


def test_prefix_does_not_depend_on_n() -> None:
    def make() -> list[Source]:
        return [counting_source("a", 1, 30, []), counting_source("b", 2, 500, [])]

    assert draw_unique(make(), random.Random(3), 10) == draw_unique(make(), random.Random(3), 40)[:10]


def test_overcounted_space_raises_instead_of_hanging() -> None:
    cycle = itertools.cycle(["x", "y"])  # only two distinct questions, though five are claimed
    liar = Source("liar", 1, 5, lambda rng: Example(question=next(cycle), answer="0", category="liar"))
    with pytest.raises(RuntimeError, match="miscounted"):
        draw_unique([liar], random.Random(0), 5)


def test_whole_space_is_drawn_when_asked() -> None:
    sources = [counting_source("a", 1, 7, []), counting_source("b", 5, 40, [])]
    assert len(draw_unique(sources, random.Random(1), 47)) == 47
