"""Properties that must hold for any text, checked on generated inputs (kept small: 2 shared cores)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from grpolab.rewards.correctness import check_numbers, numeric
from grpolab.rewards.format import answer_format, mark, match_format_approximately, tag_count
from grpolab.rewards.shaping import cosine_scaled, reasoning_steps, repetition_penalty

FAST = settings(max_examples=60, deadline=None)
PIECES = ["a", "b", " ", "\n", "<think>", "</think>", "<answer>", "</answer>", "Step 1:", "\n-"]
TAGGY = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


@FAST
@given(st.integers(-(10**12), 10**12))
def test_numeric_reads_any_formatted_integer(n: int) -> None:
    # 1,234,567 / $-5 / 42.0 spellings of n all equal the plain gold
    for text in (f"<answer>{n:,}</answer>", f"<answer>${n}</answer>", f"#### {n}.0", f"so it is {n:,}."):
        assert numeric([text], [str(n)]) == [1.0]
    assert check_numbers([f"<answer>{n:,}</answer>"], [str(n)]) == [1.5]


@FAST
@given(TAGGY)
def test_format_rewards_stay_in_range(text: str) -> None:
    assert 0.0 <= tag_count([text])[0] <= 1.0
    assert 0.0 <= mark([text])[0] <= 0.5
    assert answer_format([text])[0] in (0.0, 1.0)
    assert -2.0 <= match_format_approximately([text])[0] <= 2.0
    assert 0.0 <= reasoning_steps([text])[0] <= 1.0


@FAST
@given(st.text(alphabet="ab \n", max_size=200), st.integers(1, 4), st.floats(-3.0, 0.0))
def test_repetition_penalty_between_max_penalty_and_zero(text: str, n: int, max_penalty: float) -> None:
    value = repetition_penalty([text], ngram_size=n, max_penalty=max_penalty)[0]
    assert max_penalty - 1e-12 <= value <= 1e-12


@FAST
@given(st.integers(0, 300), st.booleans())
def test_cosine_between_its_bounds(pad: int, correct: bool) -> None:
    text = "x" * pad + ("42" if correct else "41")
    value = cosine_scaled([text], ["42"], max_len=100, correctness="numeric")[0]
    assert value is not None
    assert (0.5 <= value <= 1.0) if correct else (-1.0 <= value <= -0.5)
