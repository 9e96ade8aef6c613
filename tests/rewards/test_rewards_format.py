"""Format rewards: one table per reward, one row per edge case, expected value worked out by hand."""

from __future__ import annotations

import pytest

from grpolab.rewards.format import (
    answer_format,
    format_reward,
    hard_format,
    mark,
    match_format_approximately,
    match_format_exactly,
    tag_count,
)

GOOD_R1 = "<think>\nreason\n</think>\n<answer>\n42\n</answer>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_R1, 1.0),  # the exact layout
        (GOOD_R1 + "\ntrailing line", 1.0),  # `$` matches at the end of the </answer> line (MULTILINE)
        (GOOD_R1 + " trailing", 0.0),  # same line after </answer>: `$` cannot match
        ("x" + GOOD_R1, 0.0),  # anything before <think>: anchored at the start
        ("<think>reason</think><answer>42</answer>", 0.0),  # missing the required newlines
        ("<think>\nreason\n</think>\n\n<answer>\n42\n</answer>", 0.0),  # extra blank line between sections
        ("<think>\nline 1\n\nline 2\n</think>\n<answer>\n42\n</answer>", 1.0),  # DOTALL: multi-line think
        ("<think>\n\n</think>\n<answer>\n\n</answer>", 1.0),  # empty bodies are allowed (.*?)
        ("<answer>\n42\n</answer>", 0.0),  # no think section
        ("", 0.0),  # empty completion
        (GOOD_R1 + "\n" + GOOD_R1, 1.0),  # duplicated: the first block already matches up to a line end
    ],
)
def test_format(text: str, expected: float) -> None:
    assert format_reward([text]) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>42</answer>", 1.0),  # the tiny model's answer
        ("<think>x</think> <answer> -5 </answer>", 1.0),  # think tags are neither needed nor harmful
        ("<answer></answer>", 0.0),  # empty body
        ("<answer> \n </answer>", 0.0),  # blank body counts as empty
        ("<answer>1</answer><answer>2</answer>", 0.0),  # duplicated
        ("<answer><answer>1</answer></answer>", 0.0),  # nested: two opening tags
        ("</answer>42<answer>", 0.0),  # closing tag before opening tag
        ("<answer>42", 0.0),  # missing closing tag
        ("42", 0.0),  # no tags
        ("", 0.0),  # empty completion
    ],
)
def test_answer_format(text: str, expected: float) -> None:
    assert answer_format([text]) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_R1, 1.0),  # all four pieces once: 4 x 0.25
        ("<think>\nx\n</think>\n", 0.5),  # only the think pieces: 2 x 0.25
        ("<think>x</think><answer>y</answer>", 0.0),  # no newlines around tags: none of the pieces
        ("<think>\nx\n</think>\n<answer>\ny</answer>", 0.75),  # `\n</answer>` missing: 3 x 0.25
        (GOOD_R1 + GOOD_R1, 0.0),  # every piece twice: none counts
        ("", 0.0),  # empty completion
    ],
)
def test_tag_count(text: str, expected: float) -> None:
    assert tag_count([text]) == [expected]


TUNIX_GOOD = "<reasoning>add them</reasoning>\n<answer>42</answer>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TUNIX_GOOD, 3.0),  # the layout
        ("  \n" + TUNIX_GOOD + "\n\n  ", 3.0),  # whitespace around is allowed
        ("Sure!\n" + TUNIX_GOOD, 3.0),  # MULTILINE search: `^` may sit at a later line's start
        ("Sure! " + TUNIX_GOOD, 0.0),  # text on the same line before <reasoning>
        (TUNIX_GOOD + " done", 0.0),  # text after </answer> on its line
        ("<reasoning></reasoning><answer>42</answer>", 0.0),  # empty reasoning (.+? needs one char)
        ("<reasoning>r</reasoning><answer></answer>", 0.0),  # empty answer
        ("<reasoning>r</reasoning> junk <answer>42</answer>", 3.0),  # anything between the sections
        ("<answer>42</answer>", 0.0),  # no reasoning section
        ("", 0.0),  # empty completion
    ],
)
def test_match_format_exactly(text: str, expected: float) -> None:
    assert match_format_exactly([text]) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TUNIX_GOOD, 2.0),  # four tags once: 4 x 0.5
        ("", -2.0),  # no tag: 4 x -0.5
        ("<answer>42</answer>", 0.0),  # two once (+1), two missing (-1)
        (TUNIX_GOOD + TUNIX_GOOD, -2.0),  # all twice: 4 x -0.5
        ("<reasoning>x</reasoning><answer>1</answer></answer>", 1.0),  # 3 x 0.5 - 0.5
    ],
)
def test_match_format_approximately(text: str, expected: float) -> None:
    assert match_format_approximately([text]) == [expected]


@pytest.mark.parametrize(
    ("text", "tag", "expected"),
    [
        ("<think>x</think><answer>1</answer>", "think", 0.5),  # both pairs
        ("<answer>1</answer>", "think", 0.25),  # answer pair only
        ("<think>x</think>", "think", 0.0),  # think only: no answer, no credit
        ("<think>x</think><answer>1", "think", 0.0),  # answer pair incomplete
        ("<reasoning>x</reasoning><answer>1</answer>", "reasoning", 0.5),  # configured tag name
        ("<reasoning>x</reasoning><answer>1</answer>", "think", 0.25),  # wrong tag name: answer only
        ("", "think", 0.0),  # empty
    ],
)
def test_hard_format(text: str, tag: str, expected: float) -> None:
    assert hard_format([text], think_tag=tag) == [expected]


@pytest.mark.parametrize(
    ("text", "tag", "expected"),
    [
        ("<think>x</think><answer>1</answer>", "think", 0.5),  # four tags: 4 x 0.125
        ("<think>\nx\n</think>\n<answer>\n1\n</answer>", "think", 0.5),  # newlines are optional either way
        ("<answer>1</answer>", "think", 0.25),  # two tags
        ("<think>x", "think", 0.125),  # one tag
        ("<think><think></think>", "think", 0.25),  # duplicates count once (presence)
        ("<reasoning>x</reasoning><answer>1</answer>", "reasoning", 0.5),  # configured tag name
        ("", "think", 0.0),  # empty
    ],
)
def test_mark(text: str, tag: str, expected: float) -> None:
    assert mark([text], think_tag=tag) == [expected]
