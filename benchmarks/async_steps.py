"""Step time of one-step-off rollouts (train.max_staleness 1) against the synchronous loop (0).

    python benchmarks/async_steps.py [key=value ...]      # e.g. model.finetune=full

Runs `smollm2_cpu` with the colocated vLLM engine for 4 steps per setting, each in its own process,
one after the other, and prints per setting: the median wall time between steps 2-4 (from
metrics.jsonl's timestamps), the median update, generation, overlap and prefetch wait seconds.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOAD = [
    "generation.backend=vllm", "generation.vllm_kv_cache_gib=2", "train.max_steps=4", "train.questions_per_step=4",
    "generation.max_new_tokens=64", "eval.every_steps=0", "eval.size=4", "data.test_size=4",
    "logging.report=false", "logging.quiet=true", "train.end_checkpoint=none",
]  # fmt: skip


def run(staleness: int, extra: list[str], out: Path) -> dict[str, float]:
    args = [*WORKLOAD, f"train.max_staleness={staleness}", f"train.output_dir={out}", *extra]
    subprocess.run([sys.executable, "-m", "grpolab", "train", "-c", "smollm2_cpu", *args], check=True)
    rows = [json.loads(line) for line in next(out.glob("*/*/metrics.jsonl")).read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "loss" in r}
    later = [steps[s] for s in (2, 3, 4)]
    walls = [steps[s]["time"] - steps[s - 1]["time"] for s in (2, 3, 4)]

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in later)

    keys = ("time/train_step", "time/generation", "time/overlap", "time/prefetch_wait", "time/weight_sync")
    return {"step_wall": statistics.median(walls), **{k: median(k) for k in keys}}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for staleness in (0, 1):
            figures = run(staleness, sys.argv[1:], Path(folder) / str(staleness))
            print(f"max_staleness={staleness}: " + ", ".join(f"{k} {v:.1f} s" for k, v in figures.items()))


if __name__ == "__main__":
    main()
