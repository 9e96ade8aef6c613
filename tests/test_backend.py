"""The HF backend records the log-prob of each sampled token under the distribution it was drawn
from: the trainer's log-prob at the sampling temperature, renormalised over top-k / top-p."""

from __future__ import annotations

import pytest
import torch

from grpolab.algo.logprobs import sequence_logprobs
from grpolab.rollout.backend import HFGenerator, SamplingParams
from grpolab.rollout.types import Rollout, collate

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13]]  # different lengths: the shorter one is left-padded


def sample(model, tokenizer, params: SamplingParams):
    """Sample with the backend; the rollouts collated as the trainer collates them, and the recorded
    log-probs as a [N, C] tensor aligned with the completion columns (0 past each completion)."""
    torch.manual_seed(0)
    out = HFGenerator(model, tokenizer.pad_token_id, [tokenizer.eos_token_id]).generate(PROMPTS, params)
    rollouts = [
        Rollout(row // params.num_samples, PROMPTS[row // params.num_samples], ids, [1] * len(ids), "", False)
        for row, ids in enumerate(out.completions)
    ]
    batch = collate(rollouts, tokenizer.pad_token_id)
    recorded = torch.zeros(batch.completion_mask.shape)
    for row, logprobs in enumerate(out.logprobs):
        recorded[row, : len(logprobs)] = torch.tensor(logprobs)
    assert sum(len(ids) for ids in out.completions) > len(out.completions)  # more than one token each
    return batch, recorded


def filtered_logprobs(logits: torch.Tensor, ids: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logits [N, C, V] (already / T), ids [N, C] -> log-probs [N, C] of the distribution left after
    top-k (the k largest logits) and then top-p (a token stays while the tokens more likely than it
    hold less than top_p of the mass), renormalised."""
    if top_k:
        kth_largest = logits.topk(top_k, dim=-1).values[..., -1:]  # [N, C, 1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        sorted_probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # mass of the more likely tokens
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[..., None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_recorded_logprobs_are_the_trainers_at_the_sampling_temperature(tiny_llama, tiny_tokenizer, temperature):
    params = SamplingParams(max_new_tokens=8, temperature=temperature, num_samples=3)
    batch, recorded = sample(tiny_llama, tiny_tokenizer, params)
    with torch.no_grad():
        trainer_logp, _ = sequence_logprobs(tiny_llama, batch, temperature)  # [N, C]
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(recorded[mask], trainer_logp[mask], atol=1e-5, rtol=1e-5)
    # the check can fail: at temperature 1 the same tokens have other log-probs
    with torch.no_grad():
        untempered, _ = sequence_logprobs(tiny_llama, batch, 1.0)
    assert (recorded[mask] - untempered[mask]).abs().max() > 1e-3


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, 5, 1.0), (1.0, 0, 0.6), (0.7, 8, 0.7)])
def test_recorded_logprobs_are_renormalised_over_top_k_and_top_p(tiny_llama, tiny_tokenizer, temperature, top_k, top_p):
    params = SamplingParams(max_new_tokens=8, temperature=temperature, top_k=top_k, top_p=top_p, num_samples=3)
    batch, recorded = sample(tiny_llama, tiny_tokenizer, params)
    completion_len = batch.completion_mask.shape[1]
    with torch.no_grad():
        logits = tiny_llama(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits[:, batch.prompt_length - 1 : -1]  # [N, C, V]: position P-1+j predicts completion token j
    targets = batch.input_ids[:, batch.prompt_length :]
    assert logits.shape[1] == completion_len
    expected = filtered_logprobs(logits.float() / temperature, targets, top_k, top_p)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(recorded[mask], expected[mask], atol=1e-5, rtol=1e-5)
    unfiltered = torch.log_softmax(logits.float() / temperature, -1).gather(-1, targets[..., None]).squeeze(-1)
    assert (recorded[mask] - unfiltered[mask]).abs().max() > 1e-3  # the filter changed the numbers
