"""Masked vs full loss on tool-using episodes: accuracy and tool-use rate before and after training.

    python benchmarks/agent.py --steps 40            # agent_tiny preset, calculator tool

For each mode a fresh run of the same length from the same embedded model and seed; the held-out
(test split) accuracy and the fraction of episodes that call the calculator are measured before
training and on the exported (best) model after. Prints a markdown table; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

from grpolab.api import run_training
from grpolab.compat.load import load_config


def tool_rates(run_dir) -> tuple[float, float]:
    """Calculator calls per episode in the rollouts of the first and of the last training step."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tools/call_frequency"] for r in rows if "tools/call_frequency" in r]
    return rates[0], rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="agent_tiny")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print("| mode | steps | test accuracy before | after | tool calls per episode, first -> last step | seconds |")
    print("|---|---|---|---|---|---|")
    for mode in ("masked", "full"):
        cfg = load_config(
            args.config,
            [
                *args.overrides,
                f"agent.mode={mode}",
                f"train.max_steps={args.steps}",
                f"train.seed={args.seed}",
                "train.output_dir=outputs/bench_agent",
                f"train.run_name=agent_{mode}",
                "logging.quiet=true",
            ],
        )
        started = time.perf_counter()
        summary = run_training(cfg)
        key = f"{cfg.eval.final_split}/accuracy"
        first, last = tool_rates(summary.run_dir)
        print(
            f"| {mode} | {summary.steps} | {summary.before[key]:.1%} | {summary.after[key]:.1%} | "
            f"{first:.2f} -> {last:.2f} | {time.perf_counter() - started:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
