"""Settings and readers shared by the tests that run real (short) trainings on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from grpolab.compat.load import load_config

QUICK = [
    "train.max_steps=3",
    "train.questions_per_step=2",
    "grpo.num_generations=4",
    "eval.every_steps=2",
    "eval.size=8",
    "data.test_size=8",
    "data.val_size=8",
    "data.train_size=40",
    "generation.max_new_tokens=12",
    "logging.report=false",
    "logging.quiet=true",
    "train.torch_threads=1",
]


def quick_config(tmp_path: Path, *extra: str):
    return load_config("default", [*QUICK, f"train.output_dir={tmp_path}", *extra], env_file=None, environ={})


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time" and not k.startswith("time/")} for row in rows]


def micro_llama(seed: int = 0):
    """A one-layer Llama with a 32-token vocabulary, built in-process (never a download)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)
