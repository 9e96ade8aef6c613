"""A mix of three skills in roughly equal thirds: arithmetic, counting, comparison.

- arithmetic: the arithmetic task's questions (data.operations over [min_num, max_num]);
  categories add / sub / mul / div.
- counting (split evenly): "How many times does the letter 'r' appear in 'strawberry'?" over a
  built-in word list (category count_letters), and "How many items are in this list: apple,
  pear, fig?" (count_items).
- comparison: "Which is larger, 17 or 23?" -> "23", two different numbers from the same range
  (compare).

Thirds are weights, not quotas: when a part runs out of distinct questions (comparison over 0..20
has only 420), the stream keeps drawing from the others, so the mix drifts rather than failing.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable

from grpolab.config.schema import DataConfig
from grpolab.data import arithmetic
from grpolab.data.arithmetic import SPACE_CAP
from grpolab.data.base import Example, Sizes, Splits
from grpolab.data.draw import Source, never, synthetic_splits, total_space

# Words with repeated letters, so that counting is not always 1; all lowercase ASCII.
WORDS = (  # noqa: SIM905  (a word list reads better as text)
    "strawberry banana mississippi committee balloon bookkeeper coffee letter apple pepper "
    "bubble assessment success address parallel cheese giraffe hippopotamus tomorrow rhythm "
    "occurrence necessary millennium embarrass accommodate possession grammar umbrella "
    "broccoli raspberry cinnamon volleyball kangaroo mammal puzzle window garden planet "
    "orange lemon"
).split()
ITEMS = (  # noqa: SIM905  (a word list reads better as text)
    "apple pear fig plum grape lemon lime cherry melon peach mango kiwi cup spoon fork plate "
    "chair table lamp book pen key coin shoe"
).split()
MIN_ITEMS, MAX_ITEMS = 2, 9
IN_WORD_PROB = 0.75  # mostly letters that occur; the rest any letter, so 0 is sometimes the answer


def letter_question(word: str, letter: str) -> Example:
    return Example(
        question=f"How many times does the letter '{letter}' appear in '{word}'?",
        answer=str(word.count(letter)),
        category="count_letters",
    )


def items_question(items: list[str]) -> Example:
    return Example(
        question=f"How many items are in this list: {', '.join(items)}?",
        answer=str(len(items)),
        category="count_items",
    )


def compare_question(a: int, b: int) -> Example:
    return Example(question=f"Which is larger, {a} or {b}?", answer=str(max(a, b)), category="compare")


def _draw_letters(rng: random.Random) -> Example:
    word = rng.choice(WORDS)
    pool = sorted(set(word)) if rng.random() < IN_WORD_PROB else string.ascii_lowercase
    return letter_question(word, rng.choice(pool))


def _draw_items(rng: random.Random) -> Example:
    return items_question(rng.sample(ITEMS, rng.randint(MIN_ITEMS, MAX_ITEMS)))


def _compare_drawer(lo: int, hi: int) -> Callable[[random.Random], Example]:
    def draw(rng: random.Random) -> Example:
        a = rng.randint(lo, hi)
        b = rng.randint(lo, hi - 1)
        return compare_question(a, b + (b >= a))  # skip a itself: uniform over the other numbers

    return draw


def sources(data: DataConfig) -> list[Source]:
    lo, hi = data.min_num, data.max_num
    ops = arithmetic.operations(data)
    items_space = sum(math.perm(len(ITEMS), k) for k in range(MIN_ITEMS, MAX_ITEMS + 1))
    n = hi - lo + 1
    return [
        *(arithmetic.sources(ops, lo, hi, weight=1 / 3) if ops else []),
        Source("count_letters", 1 / 6, len(WORDS) * len(string.ascii_lowercase), _draw_letters),
        Source("count_items", 1 / 6, items_space, _draw_items),
        # Ordered pairs of different numbers; with one number there is nothing to compare.
        Source("compare", 1 / 3, min(n * (n - 1), SPACE_CAP), _compare_drawer(lo, hi) if n > 1 else never),
    ]


def describe(data: DataConfig) -> str:
    ops = " ".join(arithmetic.operations(data))
    return f"task 'mixed' (numbers {data.min_num}..{data.max_num}, operations {ops})"


def build(data: DataConfig, seed: int, sizes: Sizes) -> Splits:
    return synthetic_splits(sources(data), seed, sizes, describe(data), "")


def space(data: DataConfig) -> int:
    return total_space(sources(data))
