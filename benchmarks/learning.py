"""Does GRPO make the model better? Held-out greedy accuracy before/after a preset, over seeds.

    python benchmarks/learning.py                                  # the tiny default preset
    python benchmarks/learning.py --config smollm2_cpu --seeds 1 2 3
    python benchmarks/learning.py --config mixed --seeds 1 2 3 -- optim.lr=1e-3

Per seed: the final split's greedy accuracy (correctness, from the preset's correctness reward)
and format rate before and after, wall-clock seconds, and the validation curve; then the mean and
sample standard deviation over seeds. A benchmark (figures), not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from grpolab.api import run_training
from grpolab.compat.load import load_config
from grpolab.observe.files import METRICS_FILE, read_jsonl


def validation_curve(run_dir: Path) -> list[tuple[int, float, float | None]]:
    """(step, eval/accuracy, eval/format) for every validation in the run, the last record per step."""
    by_step: dict[int, tuple[float, float | None]] = {}
    for record in read_jsonl(run_dir / METRICS_FILE):
        if "eval/accuracy" in record and "step" in record:
            by_step[int(record["step"])] = (record["eval/accuracy"], record.get("eval/format"))
    return [(step, acc, fmt) for step, (acc, fmt) in sorted(by_step.items())]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1%}"
    return f"{statistics.fmean(values):.1%} ± {statistics.stdev(values):.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--output-dir", default="outputs/bench")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    befores, afters, gains, seconds_all = [], [], [], []
    for seed in args.seeds:
        cfg = load_config(
            args.config,
            [*args.overrides, f"train.seed={seed}", f"train.output_dir={args.output_dir}", "logging.quiet=true"],
        )
        started = time.perf_counter()
        summary = run_training(cfg)
        seconds = time.perf_counter() - started
        split = cfg.eval.final_split
        before, after = summary.before[f"{split}/accuracy"], summary.after[f"{split}/accuracy"]
        befores.append(before)
        afters.append(after)
        gains.append(after - before)
        seconds_all.append(seconds)
        curve = ", ".join(f"{step}: {acc:.0%}/{_pct(fmt)}" for step, acc, fmt in validation_curve(summary.run_dir))
        print(
            f"seed {seed}: {split}/accuracy {before:.1%} -> {after:.1%} (gain {after - before:+.1%}); "
            f"{split}/format {_pct(summary.before.get(f'{split}/format'))} -> "
            f"{_pct(summary.after.get(f'{split}/format'))}; {summary.steps} steps, {seconds:.0f} s; "
            f"best val {_pct(summary.best_accuracy)} at step {summary.best_step}; {summary.run_dir}\n"
            f"  validation curve (step: accuracy/format): {curve}",
            flush=True,
        )
    print(
        f"over {len(gains)} seed(s): before {_spread(befores)}, after {_spread(afters)}, gain {_spread(gains)} "
        f"(min {min(gains):+.1%}, max {max(gains):+.1%}); {statistics.fmean(seconds_all):.0f} s per run"
    )


if __name__ == "__main__":
    main()
