"""`grpolab rewards list` / `grpolab rewards try`, through the parser the main CLI will mount."""

from __future__ import annotations

import argparse
import io
import shlex

import pytest

from grpolab.cli.rewards import add_rewards_parser
from grpolab.rewards import reward_registry


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="grpolab")
    add_rewards_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_list_shows_every_reward_with_params(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert run(["rewards", "list"]) == 0
    out = capsys.readouterr().out
    for name in reward_registry():
        assert name in out
    assert "max_len=1000" in out and "max_penalty=-1.0" in out and "max_completion_len=<required>" in out


@pytest.mark.parametrize(
    ("command", "code", "shown"),
    [
        ("numeric --completion '<answer>1,000</answer>' --answer 1000", 0, "numeric = 1"),
        ("numeric --completion 7 --answer n/a", 0, "numeric = None"),  # unparsable gold
        ("format --completion '<answer>1</answer>' --answer 1", 0, "format = 0"),  # no think section
        ("hard_format --completion '<reasoning>x</reasoning><answer>1</answer>' --answer 1 "
         "--param think_tag=reasoning", 0, "hard_format = 0.5"),  # both pairs with the configured tag
        ("repetition_penalty --completion 'a b c a b c' --answer '' --param max_penalty=-2", 0,
         "repetition_penalty = -0.5"),  # 3 unique of 4 trigrams: 1/4 * -2
        ("soft_overlong --completion 'w w w w w w w w w' --answer '' --param max_completion_len=10 "
         "--param cache=2", 0, "soft_overlong = -0.5"),  # 9 words taken as tokens: (8 - 9) / 2
        ("soft_overlong --completion x --answer '' --tokens 11 --param max_completion_len=10 "
         "--param cache=2", 0, "soft_overlong = -1"),  # explicit token count beyond Lmax
        # a user function by import path
        ("user_rewards_fixture:shout --completion HI --answer '' --param bonus=1", 0, "shout = 2"),
        ("numerc --completion x --answer 1", 2, "did you mean 'numeric'?"),
        ("numeric --completion x --answer 1 --param oops", 2, "must look like key=value"),
        ("numeric --completion x --answer 1 --param weight=abc", 2, "valid number"),
    ],
)  # fmt: skip
def test_try(command: str, code: int, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["rewards", "try", *shlex.split(command)]) == code
    assert shown in capsys.readouterr().out


def test_try_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("so 6*7 = 42"))
    assert run(["rewards", "try", "numeric", "--completion", "-", "--answer", "42"]) == 0
    assert "numeric = 1" in capsys.readouterr().out
