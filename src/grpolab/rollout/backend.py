"""Generation backends: token ids in, sampled token ids (and their sampler log-probs) out.

Hugging Face `generate` here; vLLM, colocated (rollout/vllm_backend.py) or as a server
(rollout/vllm_server.py), fits the same `Generator` protocol, chosen by `generation.backend`
(rollout/generators.py). Backends never see text: prompts arrive as ids and completions leave as ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass
class GenerationOutput:
    """Row i*num_samples + j is sample j of prompt i.

    completions: sampled ids up to and including the first stop token (no padding).
    truncated: True where no stop token came within max_new_tokens.
    logprobs: the log-prob of each sampled token under the distribution it was drawn from, i.e.
        after repetition penalty, temperature, top-k and top-p (greedy: the model's log-prob at T=1).
    """

    completions: list[list[int]]
    truncated: list[bool]
    logprobs: list[list[float]]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    num_samples: int = 1
    repetition_penalty: float = 1.0


class Generator(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput: ...


class _SampledLogprobRecorder(LogitsProcessor):
    """Records log p(sampled token) with O(N x V) memory instead of keeping every step's scores.

    It must see the final distribution of step t, the one the token is drawn from: see
    `_sampling_processors` for how it is kept last. The token sampled at step t is visible at step
    t+1 as the last input id, and after generate for the final step.
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None  # [N, V] log-probs of the last step
        self.picked: list[torch.Tensor] = []  # one [N] tensor per step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.picked.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.picked.append(self.previous.gather(-1, last_tokens[:, None]).squeeze(-1))
        return torch.stack(self.picked, dim=1) if self.picked else torch.zeros(last_tokens.shape[0], 0)


# Sampling settings that make `generate` add no warper of its own: the model's generation_config
# may set some (Qwen's sets top_k=20, top_p=0.8), and any warper generate adds would run after the
# recorder, so the recorded log-probs would not be those of the distribution sampled from.
_NO_BUILTIN_WARPERS: dict[str, Any] = {
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
}


def _sampling_processors(params: SamplingParams, recorder: _SampledLogprobRecorder) -> LogitsProcessorList:
    """Temperature, top-k, top-p (the order generate uses), then the recorder, as OUR processors.

    transformers 5 puts custom processors after its own logits processors (repetition penalty,
    suppressed tokens) but before its sampling warpers; applying the warpers ourselves, and turning
    generate's off (`_NO_BUILTIN_WARPERS`), lets the recorder see exactly what is sampled from.
    """
    processors: list[LogitsProcessor] = []
    if not params.greedy:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            processors.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=params.top_p))
    return LogitsProcessorList([*processors, recorder])


class HFGenerator:
    """Batched sampling with `model.generate` (KV cache on), prompts left-padded."""

    def __init__(self, model: Any, pad_id: int, stop_ids: list[int]) -> None:
        self.model = model
        self.pad_id = pad_id
        self.stop_ids = stop_ids

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, ids in enumerate(prompts):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids) :] = 1
        recorder = _SampledLogprobRecorder()
        # greedy decoding applies no warpers at all (they only act when sampling)
        sampling: dict[str, Any] = {"do_sample": False} if params.greedy else {"do_sample": True, **_NO_BUILTIN_WARPERS}
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=params.max_new_tokens,
                num_return_sequences=params.num_samples,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                repetition_penalty=params.repetition_penalty,
                logits_processor=_sampling_processors(params, recorder),
                use_cache=True,
                # transformers turns lockstep decoding on for FSDP modules; ours generates on the
                # gathered model (sharding.ShardedModel.gathered), where ranks need not agree on steps
                synced_gpus=False,
                **sampling,
            )
        finally:
            self.model.train(was_training)
        generated = out[:, width:].cpu()  # [N*S, <=max_new_tokens]
        logprobs = recorder.finish(generated[:, -1]).cpu() if generated.shape[1] else None
        completions, truncated, kept_logprobs = [], [], []
        stops = set(self.stop_ids)
        for row in range(generated.shape[0]):
            ids = generated[row].tolist()
            end = next((i + 1 for i, tok in enumerate(ids) if tok in stops), None)
            completions.append(ids[:end] if end is not None else ids)
            truncated.append(end is None)
            length = len(completions[-1])
            kept_logprobs.append(logprobs[row, :length].tolist() if logprobs is not None else [])
        return GenerationOutput(completions, truncated, kept_logprobs)
