"""SmolLM2-135M-Instruct learns to use the calculator: warm start, then GRPO, masked vs full.

    python benchmarks/agent_smollm2.py [overrides ...] --seeds 1 2 3 --modes masked full

For each mode and seed, from the untrained model: held-out (test split) greedy episodes before any
training, after the warm start, and after GRPO (the exported best model): accuracy, the share of
episodes that call a tool, failed calls / calls, mean model turns; and the wall time of warm start +
GRPO. Prints one row per run, then mean ± sample std over seeds. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from grpolab import GRPOConfig, GRPOTrainer
from grpolab.rewards.inputs import reward_inputs
from grpolab.rollout.agent_metrics import agent_metrics
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.generators import sync_after_step
from grpolab.train.warm_start import warm_start_policy

FIGURES = ("accuracy", "sampled", "tool_rate", "failed_calls", "turns")


def held_out(trainer: GRPOTrainer) -> dict[str, float]:
    """Greedy episodes on the test split: accuracy and tool use."""
    t = trainer.trainer
    examples = t.splits.test
    params = SamplingParams(max_new_tokens=t.cfg.generation.max_new_tokens, greedy=True)
    with torch.no_grad():
        rollouts = t.rollouts.sample(examples, params)
    scores = t.eval_rewards.score(reward_inputs(examples, rollouts))
    correct = [v is not None and v > 0.5 for v in scores.per_function[t.cfg.eval.correctness_reward]]
    metrics = agent_metrics(rollouts)
    return {
        "accuracy": sum(correct) / len(correct),
        "tool_rate": sum(r.info.get("tool_calls", 0) > 0 for r in rollouts) / len(rollouts),
        "failed_calls": metrics["tools/failure_frequency"],
        "turns": metrics["turns/mean"],
    }


def warm_start(trainer: GRPOTrainer, cfg: GRPOConfig) -> dict[str, float]:
    """The trainer's own warm start (train/warm_start.py) with the preset's `warm_start:` section, run
    here (the trainer's copy has steps=0) so the held-out episodes can be measured between it and GRPO."""
    t = trainer.trainer
    report = warm_start_policy(cfg, t.rollouts, t.model, t.splits.train, t.loaded.stop_ids[0], t.device, print)
    sync_after_step(t.generator, t.model)  # vLLM: the engine gets the warm-started weights
    return {"ws_seconds": report.seconds, "ws_traces": report.traces, "ws_loss": report.losses[-1]}


def overrides(mode: str, seed: int, args: argparse.Namespace) -> list[str]:
    return [
        f"agent.mode={mode}",
        f"train.seed={seed}",
        "train.output_dir=outputs/bench_agent_smollm2",
        f"train.run_name=agent_smollm2_{mode}_{seed}",
        "logging.quiet=true",
        *args.overrides,
    ]


def one_run(mode: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    cfg = GRPOConfig.load(args.config, *overrides(mode, seed, args))
    started = time.perf_counter()
    trainer = GRPOTrainer(args=GRPOConfig.load(args.config, *overrides(mode, seed, args), "warm_start.sft_steps=0"))
    row: dict[str, float] = {"seed": seed}
    try:
        row.update({f"before_{k}": v for k, v in held_out(trainer).items()})
        print(f"[{mode} seed {seed}] before: {row}", flush=True)
        ws_started = time.perf_counter()
        if cfg.warm_start.sft_steps > 0:
            row.update(warm_start(trainer, cfg))
        row["ws_wall"] = time.perf_counter() - ws_started
        row.update({f"ws_{k}": v for k, v in held_out(trainer).items()})
        print(f"[{mode} seed {seed}] after warm start: {row}", flush=True)
        if not args.no_grpo:
            summary = trainer.train()
            row["grpo_steps"] = summary.steps
            split = cfg.eval.final_split  # sampled pass@1 of the trainer's own evaluations (T = eval.temperature)
            row["ws_sampled"] = summary.before.get(f"{split}/pass@1", float("nan"))
            row["after_sampled"] = (summary.after or {}).get(f"{split}/pass@1", float("nan"))
            row["best_step"] = summary.best_step if summary.best_step is not None else -1
            row.update({f"after_{k}": v for k, v in held_out(trainer).items()})
    finally:
        trainer.close()
    row["seconds"] = time.perf_counter() - started
    print(f"[{mode} seed {seed}] {row}", flush=True)
    return row


def _cell(values: list[float], percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    mean = statistics.mean(values) * scale
    if len(values) < 2:
        return f"{mean:.1f}" if percent else f"{mean:.2f}"
    std = statistics.stdev(values) * scale
    return f"{mean:.1f} ± {std:.1f}" if percent else f"{mean:.2f} ± {std:.2f}"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    stages = ("before", "ws", "after")
    head = "| mode | seeds | " + " | ".join(f"{f} {s}" for f in FIGURES for s in stages) + " | minutes |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for mode, rows in results.items():
        if not rows:  # this mode's first run is still to come
            continue
        cells = []
        for figure in FIGURES:
            for stage in stages:
                values = [r[f"{stage}_{figure}"] for r in rows if f"{stage}_{figure}" in r]
                cells.append(_cell(values, figure != "turns") if values else "-")
        minutes = _cell([r["seconds"] / 60 for r in rows], percent=False)
        lines.append(f"| {mode} | {len(rows)} | " + " | ".join(cells) + f" | {minutes} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="smollm2_agent_cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--modes", nargs="+", default=["masked"], choices=["masked", "full"])
    parser.add_argument("--no-grpo", action="store_true", help="stop after the warm start (probes)")
    parser.add_argument("overrides", nargs="*", help="config overrides, key.sub=value (warm_start.sft_steps=5 ...)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    for seed in args.seeds:
        for mode in args.modes:
            results[mode].append(one_run(mode, seed, args))
            print(table(results), flush=True)


if __name__ == "__main__":
    main()
