"""Per-token log-probabilities and entropies of sampled ids, computed in row chunks.

A full log-softmax over a 150k vocabulary for every position of a 48-trajectory batch is tens of
GB; chunking over rows keeps the peak at one chunk while giving the same numbers (tested).
"""

from __future__ import annotations

from typing import Any

import torch

from grpolab.rollout.types import Batch


def token_logprobs(
    logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0, chunk_rows: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, T, V], ids [N, T] -> (logp [N, T], entropy [N, T]) at temperature.

    The sampler drew from softmax(logits / temperature), so the policy's probability of a sampled
    token must be computed at the same temperature or the on-policy ratio would not be 1.
    """
    if logits.shape[:2] != ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ids {tuple(ids.shape)} disagree")
    logps, entropies = [], []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = logits[start : start + chunk_rows].float() / temperature  # [n, T, V]
        log_probs = torch.log_softmax(chunk, dim=-1)
        logps.append(log_probs.gather(-1, ids[start : start + chunk_rows, :, None]).squeeze(-1))
        with torch.no_grad():
            entropies.append(-(log_probs.exp() * log_probs).sum(-1))
    return torch.cat(logps), torch.cat(entropies)


def sequence_logprobs(
    model: Any, batch: Batch, temperature: float, chunk_rows: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward a collated batch; log-probs [N, C] and entropies [N, C] of its completion tokens.

    Only the last C+1 positions' logits are materialised (logits_to_keep): position P-1 predicts
    the first completion token, position P+C-2 the last.
    """
    completion_len = batch.completion_mask.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=completion_len + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :]  # [N, C, V]
    targets = batch.input_ids[:, batch.prompt_length :]  # [N, C]
    return token_logprobs(logits, targets, temperature, chunk_rows)
