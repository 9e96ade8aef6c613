"""Correctness rewards: one table per reward, one row per edge case, expected value by hand."""

from __future__ import annotations

from typing import Any

import pytest

from grpolab.rewards.correctness import numeric


@pytest.mark.parametrize(
    ("text", "gold", "expected"),
    [
        ("<answer>42</answer>", "42", 1.0),  # the tiny model's answer
        ("<answer>42.0</answer>", "42", 1.0),  # compared as numbers
        ("<answer> 42. </answer>", "42", 1.0),  # spaces and a trailing '.' stripped
        ("<answer>$1,000</answer>", "1000", 1.0),  # '$' and ',' stripped
        ("<answer>-5</answer>", "-5", 1.0),  # negative numbers
        ("<answer>5</answer>", "-5", 0.0),  # sign matters
        ("<answer>x = 7</answer>", "7", 1.0),  # body not a number: its last number
        ("<answer>3/4</answer>", "0.75", 1.0),  # a fraction equals its decimal
        ("<answer>1</answer> then <answer>2</answer>", "2", 1.0),  # the last answer block counts
        ("<answer>41</answer> 42", "42", 0.0),  # the answer block wins over the last number
        ("work...\n#### 18", "Janet... #### 18", 1.0),  # GSM8K style both sides
        ("#### 1,234\nbye 7", "1234", 1.0),  # the #### line wins over the last number
        ("so 3 + 4 = 7", "7", 1.0),  # no tags: last number
        ("10-3 leaves 7", "7", 1.0),  # '-' after a digit is an operator, not a sign
        ("10-3", "-3", 0.0),  # ... so the last number is 3, not -3
        ("the answer is -3.", "-3", 1.0),  # trailing sentence dot
        ("1,2,3", "3", 1.0),  # a list, not the number 123
        ("no number here", "42", 0.0),  # nothing to extract
        ("", "42", 0.0),  # empty completion
        ("<answer>42</answer>", "forty-two", None),  # unparsable gold
        ("<answer>42</answer>", "", None),  # empty gold
        ("<answer>0</answer>", "0", 1.0),  # zero is a number (not falsy)
    ],
)
def test_numeric(text: str, gold: Any, expected: float | None) -> None:
    assert numeric([text], [gold]) == [expected]
