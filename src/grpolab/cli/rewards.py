"""`grpolab rewards list` and `grpolab rewards try`: see what rewards exist and what one gives.

    grpolab rewards list
    grpolab rewards try numeric --completion "<answer>1,000</answer>" --answer 1000
    grpolab rewards try cosine_scaled --completion "$(cat out.txt)" --answer 42 --param max_len=500

The main CLI calls `add_rewards_parser(subparsers)`; each leaf sets `func(args) -> exit code`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from grpolab.config.load import ConfigError, parse_value
from grpolab.config.schema import RewardsConfig
from grpolab.rewards import RewardError, RewardInputs, build_rewards, reward_registry


def add_rewards_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser("rewards", help="list reward functions or try one")
    sub = parser.add_subparsers(dest="rewards_command", metavar="{list,try}")
    sub.required = True

    listing = sub.add_parser("list", help="every built-in reward, its params and defaults")
    listing.set_defaults(func=cmd_list)

    trying = sub.add_parser("try", help="score one completion with one reward")
    trying.add_argument("name", help="a built-in reward name, or an import path pkg.module:function")
    trying.add_argument("--completion", required=True, help="completion text ('-' reads stdin)")
    trying.add_argument("--answer", required=True, help="gold answer (GSM8K '#### N' is understood)")
    trying.add_argument("--question", default="", help="question text (for rewards that read it, e.g. judge)")
    trying.add_argument(
        "--tokens", type=int, default=None, help="completion length in tokens (soft_overlong); default: words"
    )
    trying.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="reward param, value parsed as YAML"
    )
    trying.set_defaults(func=cmd_try)
    return parser


def _format_default(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def cmd_list(args: argparse.Namespace, console: Console | None = None) -> int:
    console = console or Console()
    table = Table(title="reward functions", show_lines=False, expand=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("source", style="magenta")
    table.add_column("params (defaults)")
    table.add_column("description")
    from grpolab.config.openr1 import OPENR1_PARAMS, OPENR1_REWARDS

    for name, info in reward_registry().items():
        params = "\n".join(f"{k}={_format_default(v)}" for k, v in info.params.items()) or "-"
        # open-r1's names for the same reward and params, accepted in configs as written
        others = [alias for alias, target in OPENR1_REWARDS.items() if target == name]
        others += [f"{flat} (= {param})" for flat, (reward, param) in OPENR1_PARAMS.items() if reward == name]
        shown = "\n".join([name, *(f"  {other}" for other in others)])
        table.add_row(shown, info.source, params, info.description)
    console.print(table)
    console.print("Columns (answer, question, category, ...) are passed by name; see docs/rewards.md.")
    return 0


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param '{item}' must look like key=value")
        params[key.strip()] = parse_value(text)
    return params


def cmd_try(args: argparse.Namespace, console: Console | None = None) -> int:
    console = console or Console()
    completion = sys.stdin.read() if args.completion == "-" else args.completion
    try:
        params = _parse_params(args.param)
        source = "fn" if ":" in args.name else "name"
        rewards = build_rewards(RewardsConfig.model_validate([{source: args.name, **params}]))
    except (ConfigError, ValidationError) as err:
        message = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
        console.print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    tokens = args.tokens if args.tokens is not None else len(completion.split())
    inputs = RewardInputs(
        prompts=[args.question],
        completions=[completion],
        completion_ids=[[]],
        rows=[{"question": args.question, "answer": args.answer, "category": ""}],
        completion_lengths=[tokens],
    )
    try:
        scores = rewards.score(inputs)
    except RewardError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return 1
    label = rewards.labels[0]
    value = scores.per_function[label][0]
    shown = "None (cannot score this one)" if value is None else f"{value:g}"
    console.print(f"{label} = {shown}", highlight=False)
    return 0
