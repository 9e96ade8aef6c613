"""Single-turn rollouts: chat-templated prompt ids in, G sampled completions per question out."""

from __future__ import annotations

from typing import Any

from grpolab.config.schema import DataConfig
from grpolab.data import build_messages
from grpolab.data.base import Example
from grpolab.rollout.backend import Generator, SamplingParams
from grpolab.rollout.types import Rollout


def full_prompt_ids(tokenizer: Any, example: Example, data: DataConfig) -> list[int]:
    """The chat-templated question, whole."""
    text = tokenizer.apply_chat_template(build_messages(example, data), add_generation_prompt=True, tokenize=False)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def prompt_ids(tokenizer: Any, example: Example, data: DataConfig, max_prompt_length: int) -> list[int]:
    """Chat-template the question; over-long prompts keep their end (the question and the glue).
    The trainer counts and reports them once (train.preflight.report_long_prompts)."""
    return full_prompt_ids(tokenizer, example, data)[-max_prompt_length:]


def completion_text(tokenizer: Any, ids: list[int], stop_ids: list[int]) -> str:
    body = ids[:-1] if ids and ids[-1] in stop_ids else ids
    return str(tokenizer.decode(body, skip_special_tokens=True))


def sample_completions(
    generator: Generator,
    tokenizer: Any,
    prompts: list[list[int]],
    params: SamplingParams,
    stop_ids: list[int],
) -> list[Rollout]:
    """params.num_samples completions per prompt; rollout k*G + g is sample g of prompt k.

    Every sampled token is trained (mask 1), the stop token included: the model must learn when
    to stop. Padding is added later by `collate` and is never part of completion_ids.
    """
    out = generator.generate(prompts, params)
    rollouts = []
    for row, ids in enumerate(out.completions):
        question = row // params.num_samples
        rollouts.append(
            Rollout(
                question_index=question,
                prompt_ids=prompts[question],
                completion_ids=ids,
                completion_mask=[1] * len(ids),
                text=completion_text(tokenizer, ids, stop_ids),
                truncated=out.truncated[row],
                sample_logprobs=out.logprobs[row],
            )
        )
    return rollouts
