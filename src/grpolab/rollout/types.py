"""A rollout is plain data: the exact token ids the model saw and sampled, and which ones it sampled.

Training reads these ids directly (token-in, token-out); decoded text exists only for rewards and
display, so a tokenizer round-trip can never change what is trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Rollout:
    """One trajectory of one question.

    completion_ids: every token after the prompt (single-turn: the sampled completion up to and
        including eos; agent: model turns interleaved with tool/observation tokens).
    completion_mask: 1 where the model sampled the token (trained), 0 elsewhere (tool output,
        chat-template glue we inserted). Same length as completion_ids; padding is added at collate.
    sample_logprobs: log-prob of each sampled token under the sampler (0 where mask is 0), if kept.
    """

    question_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_mask: list[int]
    text: str
    truncated: bool
    sample_logprobs: list[float] | None = None
    messages: list[dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.completion_mask):
            raise ValueError("completion_ids and completion_mask must have the same length")


@dataclass
class Batch:
    """Rollouts collated for the forward pass: prompts left-padded, completions right-padded.

    input_ids [N, P+C], attention_mask [N, P+C], completion_mask [N, C] (float), position_ids [N, P+C].
    sample_logp [N, C]: the sampler's log-prob of each token the model sampled, NaN where it sampled
    none (tool output and template glue, which full agent mode trains too; padding), when every
    rollout kept them; the update compares it with its own (mismatch, importance sampling).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_length: int
    sample_logp: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, rows: slice | torch.Tensor) -> Batch:
        return Batch(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.position_ids[rows],
            self.completion_mask[rows],
            self.prompt_length,
            None if self.sample_logp is None else self.sample_logp[rows],
        )

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.completion_mask.to(device),
            self.prompt_length,
            None if self.sample_logp is None else self.sample_logp.to(device),
        )


def collate(rollouts: list[Rollout], pad_id: int) -> Batch:
    """Left-pad prompts and right-pad completions so every completion starts at column P."""
    prompt_len = max(len(r.prompt_ids) for r in rollouts)
    completion_len = max(max(len(r.completion_ids) for r in rollouts), 1)
    n = len(rollouts)
    input_ids = torch.full((n, prompt_len + completion_len), pad_id, dtype=torch.long)
    attention = torch.zeros((n, prompt_len + completion_len), dtype=torch.long)
    mask = torch.zeros((n, completion_len), dtype=torch.float32)
    keep_logp = all(r.sample_logprobs is not None and len(r.sample_logprobs) == len(r.completion_ids) for r in rollouts)
    sample_logp = torch.full((n, completion_len), math.nan) if keep_logp else None
    for i, r in enumerate(rollouts):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        input_ids[i, prompt_len - p : prompt_len] = torch.tensor(r.prompt_ids, dtype=torch.long)
        attention[i, prompt_len - p : prompt_len] = 1
        if c:
            input_ids[i, prompt_len : prompt_len + c] = torch.tensor(r.completion_ids, dtype=torch.long)
            attention[i, prompt_len : prompt_len + c] = 1
            mask[i, :c] = torch.tensor(r.completion_mask, dtype=torch.float32)
            if sample_logp is not None:
                logps = torch.tensor(r.sample_logprobs, dtype=torch.float32)
                # agent episodes say which spans the model sampled; a single-turn completion is all sampled
                for start, end in r.info.get("sampled_spans", [[0, c]]):
                    sample_logp[i, start:end] = logps[start:end]
    # Same positions as HF generate derives from a left-padded attention mask.
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    return Batch(input_ids, attention, position_ids, mask, prompt_len, sample_logp)
