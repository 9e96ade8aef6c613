"""Does GRPO make the embedded model better? Held-out accuracy before/after a preset, and seconds.

    python benchmarks/learning.py                       # the default preset
    python benchmarks/learning.py --config mixed --seeds 1 2 3 -- optim.lr=1e-3

Prints one line per seed and the mean; this is a benchmark (figures), not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

from grpolab.api import run_training
from grpolab.config.load import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--output-dir", default="outputs/bench")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    gains = []
    for seed in args.seeds:
        cfg = load_config(
            args.config,
            [*args.overrides, f"train.seed={seed}", f"train.output_dir={args.output_dir}", "logging.quiet=true"],
        )
        started = time.perf_counter()
        summary = run_training(cfg)
        seconds = time.perf_counter() - started
        key = f"{cfg.eval.final_split}/accuracy"
        before, after = summary.before[key], summary.after[key]
        gains.append(after - before)
        print(
            f"seed {seed}: {key} before {before:.1%} after {after:.1%} (gain {after - before:+.1%}); "
            f"{summary.steps} steps, {seconds:.0f} s, best val {summary.best_accuracy:.1%} at step "
            f"{summary.best_step}; {summary.run_dir}"
        )
    if len(gains) > 1:
        print(f"mean gain {statistics.fmean(gains):+.1%} over {len(gains)} seeds (min {min(gains):+.1%})")


if __name__ == "__main__":
    main()
