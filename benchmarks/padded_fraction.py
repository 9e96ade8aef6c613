"""The padded fraction of the training passes with and without train.length_buckets, on the
vs_trl workload (SmolLM2-135M-Instruct, 4 questions x 8 generations, 64 new tokens, beta 0.04):
each step's batch is measured under the four plans (share_prompt on/off x buckets off/on), then the
step trains with the configured plan, whose logged train/padded_fraction must match its row.

    python benchmarks/padded_fraction.py --steps 2 -- model.cache_dir=/tmp/smol-cache
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import grpolab.train.trainer as trainer_module
from grpolab.algo.logprobs import can_share_prompt
from grpolab.compat.load import load_config
from grpolab.train.update import policy_update
from grpolab.train.update_plan import length_order, micro_batch_size, micro_batches, padded_fraction

WORKLOAD = [
    "model.name=smollm2-135m-instruct",
    "train.questions_per_step=4",
    "grpo.num_generations=8",
    "generation.max_new_tokens=64",
    "generation.temperature=1.0",
    "grpo.beta=0.04",
    "grpo.loss_type=dapo",
    "optim.lr=1e-6",
    "eval.every_steps=0",
    "logging.quiet=true",
    "logging.report=false",
    "logging.tensorboard=false",
    "train.output_dir=outputs/padded_fraction",
]


def plans(model: Any, batch: Any, cfg: Any) -> dict[str, float]:
    """The padded fraction of one batch's training passes under each plan."""
    out = {}
    for share in (True, False):
        shared = share and can_share_prompt(model, training=True)
        parts = micro_batches(len(batch), micro_batch_size(cfg, batch, shared))
        for buckets in (False, True):
            rows = batch.select(length_order(batch, shared)) if buckets else batch
            out[f"share_prompt={share} length_buckets={buckets}"] = padded_fraction(rows, parts, shared)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra grpolab overrides, key=value")
    args = parser.parse_args()
    cfg = load_config(None, [*WORKLOAD, f"train.max_steps={args.steps}", *args.overrides])
    measured: list[dict[str, float]] = []

    def measuring_update(model, optimizer, scheduler, batch, adv, cfg, *rest, **kwargs):  # type: ignore[no-untyped-def]
        measured.append(plans(model, batch, cfg))
        return policy_update(model, optimizer, scheduler, batch, adv, cfg, *rest, **kwargs)

    trainer_module.policy_update = measuring_update  # type: ignore[assignment]
    from grpolab.api import GRPOTrainer

    trainer = GRPOTrainer(args=cfg).trainer  # the training steps alone: no evaluation, no checkpoints
    for step in range(args.steps):
        metrics = trainer.train_step()
        row = {"step": step + 1, **measured[-1], "logged train/padded_fraction": metrics["train/padded_fraction"]}
        print(json.dumps(row))
        trainer.state.step += 1
    trainer.tracker.close({})


if __name__ == "__main__":
    main()
