"""Correctness rewards: one table per reward, one row per edge case, expected value by hand."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from grpolab.rewards import correctness
from grpolab.rewards.correctness import accuracy, check_answer, check_numbers, numeric


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


@pytest.mark.parametrize(
    ("text", "gold", "expected"),
    [
        (r"The answer is $\boxed{42}$", "42", 1.0),  # boxed, gold a plain number
        (r"\boxed{-5}", "-5", 1.0),  # negative
        (r"\boxed{1,000}", "1000", 1.0),  # thousands comma in the completion
        (r"\boxed{1000}", "1,000", 1.0),  # ... and in the gold
        (r"$\boxed{\frac{1}{2}}$", "0.5", 1.0),  # compared mathematically
        (r"\boxed{2x+1}", "$1+2x$", 1.0),  # symbolic equality, LaTeX gold
        (r"\boxed{41}", "42", 0.0),  # wrong
        (
            r"$\boxed{1}$ was my guess, but after checking every case again the answer is $\boxed{2}$",
            "2",
            1.0,
        ),
        # ^ several boxes: the last one counts
        (
            r"$\boxed{1}$ was my guess, but after checking every case again the answer is $\boxed{2}$",
            "1",
            0.0,
        ),
        ("The answer is 42", "42", 0.0),  # no LaTeX: the completion is parsed from LaTeX only
        ("<answer>42</answer>", "42", 0.0),  # ... so tags alone do not count (use `numeric` for those)
        ("", "42", 0.0),  # empty completion
        (r"\boxed{42}", "Janet has 6 * 7 = 42 eggs.\n#### 42", 1.0),  # GSM8K gold: after the last ####
        (r"\boxed{42}", "forty-two", None),  # unparsable gold
        (r"\boxed{42}", "", None),  # empty gold
    ],
)
def test_accuracy(text: str, gold: str, expected: float | None) -> None:
    assert accuracy([text], [gold]) == [expected]


def test_accuracy_from_a_worker_thread() -> None:
    # math-verify's signal.alarm timeouts would raise outside the main thread; ours must not.
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(accuracy([r"\boxed{42}"], ["42"])))
    thread.start()
    thread.join(30)
    assert out == [[1.0]]


def test_accuracy_hanging_parse_times_out_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(completion: str, gold: str) -> bool:
        time.sleep(2.0)
        return True

    monkeypatch.setattr(correctness, "_math_verify_correct", hang)
    start = time.perf_counter()
    assert accuracy(["x", "y"], ["1", "2"], timeout_s=0.1) == [None, None]
    assert time.perf_counter() - start < 1.0  # two deadlines of 0.1 s, not two sleeps of 2 s


def test_accuracy_error_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(completion: str, gold: str) -> bool:
        raise MemoryError("sympy")

    monkeypatch.setattr(correctness, "_math_verify_correct", broken)
    with pytest.raises(MemoryError):  # RewardSet turns this into RewardError or a skipped sample
        accuracy(["x"], ["1"])


TUNIX = "<reasoning>r</reasoning><answer>{}</answer>"


@pytest.mark.parametrize(
    ("guess", "gold", "expected"),
    [
        ("42", "42", 3.0),  # exact string match
        (" 42 ", "42", 1.5),  # equal after stripping whitespace
        ("42", "Janet ... #### 42", 3.0),  # GSM8K gold: after the last #### (stripped, as the demo did)
        ("44", "42", 0.5),  # ratio 1.048 in [0.9, 1.1]
        ("9", "10", 0.5),  # ratio 0.9: lower edge of [0.9, 1.1]
        ("11", "10", 0.5),  # ratio 1.1: upper edge
        ("8", "10", 0.25),  # ratio 0.8: lower edge of [0.8, 1.2]
        ("12", "10", 0.25),  # ratio 1.2: upper edge
        ("7.9", "10", -1.0),  # ratio 0.79: outside both
        ("60", "42", -1.0),  # ratio 1.43
        ("-42", "42", -1.0),  # ratio -1
        ("forty", "42", -0.5),  # guess not a float
        ("1,000", "1000", -0.5),  # float() rejects the comma (the demo's behaviour, kept)
        ("1", "0", -0.5),  # zero gold: division by zero
        ("0", "0", 3.0),  # ... unless the strings match exactly
        ("42", "abc", -0.5),  # unparsable gold
    ],
)
def test_check_answer(guess: str, gold: str, expected: float) -> None:
    assert check_answer([TUNIX.format(guess)], [gold]) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>42</answer>", 0.0),  # no <reasoning> section: no format match -> 0
        ("", 0.0),  # empty completion
        ("<reasoning>r</reasoning>\n<answer>\n42\n</answer>\n", 1.5),  # newlines inside: strip-equal
    ],
)
def test_check_answer_layout(text: str, expected: float) -> None:
    assert check_answer([text], ["42"]) == [expected]


@pytest.mark.parametrize(
    ("text", "gold", "expected"),
    [
        ("<answer>42</answer>", "42", 1.5),  # equal
        ("<answer>The answer is 42</answer>", "42", 1.5),  # first number after <answer>
        ("<answer>42.0</answer>", "42", 1.5),  # numerically equal
        ("<answer>$42.</answer>", "42", 1.5),  # '$' and a full stop around it
        ("<answer>-5</answer>", "-5", 1.5),  # sign kept (the demo read 5 and scored 0)
        ("<answer>5</answer>", "-5", 0.0),  # ... so a wrong sign is wrong
        ("<answer>1,000</answer>", "1000", 1.5),  # commas kept (the demo read 1 and scored 0)
        ("<answer>1000</answer>", "#### 1,000", 1.5),  # GSM8K gold with a comma
        ("<answer>3 or 4</answer>", "4", 0.0),  # the FIRST number counts: 3
        ("42 <answer>x</answer>", "42", 0.0),  # numbers before <answer> do not count
        ("<answer>\n\n7</answer>", "7", 1.5),  # extra newlines
        ("42", "42", 0.0),  # no <answer> tag
        ("<answer>42</answer>", "abc", 0.0),  # unparsable gold -> 0, as in the demo
        ("", "42", 0.0),  # empty completion
    ],
)
def test_check_numbers(text: str, gold: str, expected: float) -> None:
    assert check_numbers([text], [gold]) == [expected]
