"""Test doubles for agent rollouts: a tiny char-level tokenizer with tool-aware chat templates, a
scripted Generator, and a scripted Environment. Built in-process; nothing is downloaded."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from grpolab.envs.env import Environment, StepResult
from grpolab.envs.tools import parse_tool_calls
from grpolab.rollout.backend import GenerationOutput, SamplingParams

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

# Qwen2.5-style ChatML: tools listed in the system turn, consecutive tool results wrapped in ONE user
# turn as <tool_response> blocks, a newline after every <|im_end|> (the glue the rollout must not train).
# HF renders with trim_blocks, so every newline is written inside {{ }} where no block tag can eat it.
QWEN_STYLE = (
    "{% if tools %}{{ '<|im_start|>system\\n' }}"
    "{% if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif %}"
    "{{ '# Tools\\n<tools>' }}{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools><|im_end|>\\n' }}"
    "{% elif messages[0].role == 'system' %}"
    "{{ '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{ '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{% elif not (message.role == 'system' and loop.first) %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A `tool` role of its own and NO glue after <|im_end|>: the delta starts straight with the next turn.
TOOL_ROLE = (
    "{% if tools %}{{ '<|im_start|>tools\\n' }}{% for tool in tools %}{{ (tool | tojson) }}{% endfor %}"
    "{{ '<|im_end|>' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TEMPLATES = {"qwen_style": QWEN_STYLE, "tool_role": TOOL_ROLE}


def char_tokenizer(chat_template: str = QWEN_STYLE) -> PreTrainedTokenizerFast:
    """One id per printable character plus ChatML specials, and ONE merge ("a" "b" -> "ab") so that
    a re-tokenised "ab" gets a different id sequence than one sampled as "a", "b"."""
    chars = sorted(set(string.printable))
    vocab = {token: i for i, token in enumerate([*SPECIALS, *chars, "ab"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<pad>", bos_token=None
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def char_ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Non-canonical ids: one per character, never merged (what a sampler may well produce)."""
    return [tokenizer.convert_tokens_to_ids(ch) for ch in text]


@dataclass
class Turn:
    """One scripted model turn: `text` then the stop token (`stop`), or cut without one."""

    text: str
    stop: bool = True
    stop_token: str = "<|im_end|>"


@dataclass
class ScriptedGenerator:
    """The Generator protocol, replaying `scripts[(question, j)]` turn by turn.

    A prompt is matched to its trajectory by what the fake returned before: the prompt must start with
    the prompt it was fed last time plus the ids it sampled then. Turn-1 prompts carry "Q<i>?" and are
    given to the trajectories of question i in order (identical prompts are interchangeable).
    Records every call, every fed prompt and every sampled id/log-prob per trajectory. Scripts should
    give each trajectory a distinct first turn, or two identical histories are indistinguishable.
    """

    tokenizer: PreTrainedTokenizerFast
    scripts: dict[tuple[int, int], list[Turn]]
    calls: list[tuple[list[list[int]], SamplingParams]] = field(default_factory=list)
    fed: dict[tuple[int, int], list[list[int]]] = field(default_factory=dict)
    sampled: dict[tuple[int, int], list[list[int]]] = field(default_factory=dict)
    logprobs: dict[tuple[int, int], list[list[float]]] = field(default_factory=dict)
    _next_logprob: int = 0

    def _key(self, prompt: list[int], taken: list[tuple[int, int]]) -> tuple[int, int]:
        for key, fed in self.fed.items():
            seen = fed[-1] + self.sampled[key][-1]
            if prompt[: len(seen)] == seen:
                return key
        match = re.search(r"Q(\d+)\?", self.tokenizer.decode(prompt))
        assert match, "turn-1 prompt without a question marker"
        question = int(match.group(1))
        j = sum(1 for key in [*self.fed, *taken] if key[0] == question)
        return (question, j)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        self.calls.append(([list(p) for p in prompts], params))
        completions, truncated, logprobs = [], [], []
        keys: list[tuple[int, int]] = []
        for prompt in prompts:
            keys.append(self._key(prompt, keys))
        assert len(set(keys)) == len(keys), "two prompts of one batch matched the same trajectory"
        for key, prompt in zip(keys, prompts):
            turn = self.scripts[key][len(self.fed.get(key, []))]
            ids = char_ids(self.tokenizer, turn.text)
            if turn.stop:
                ids.append(self.tokenizer.convert_tokens_to_ids(turn.stop_token))
            cut = not turn.stop or len(ids) > params.max_new_tokens
            ids = ids[: params.max_new_tokens]
            # Distinct per token, so a test can tell that each log-prob stayed with its token.
            lps = [-(self._next_logprob + i + 1) / 1000 for i in range(len(ids))]
            self._next_logprob += len(ids)
            self.fed.setdefault(key, []).append(list(prompt))
            self.sampled.setdefault(key, []).append(ids)
            self.logprobs.setdefault(key, []).append(lps)
            completions.append(ids)
            truncated.append(cut)
            logprobs.append(lps)
        return GenerationOutput(completions, truncated, logprobs)


class EchoEnv(Environment):
    """A scripted environment: every message with a tool call gets `replies` observations echoing
    its length; the episode ends at a message without a call; `reward` is the final reward."""

    tools = [  # noqa: RUF012
        {
            "type": "function",
            "function": {"name": "echo", "description": "echo", "parameters": {"type": "object"}},
        }
    ]

    def __init__(self, replies: int = 1, reward: float | None = 0.5) -> None:
        self.replies = replies
        self.reward = reward
        self.steps = 0

    def reset(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": row["question"]}]

    def step(self, assistant_message: str) -> StepResult:
        self.steps += 1
        if not parse_tool_calls(assistant_message):
            return StepResult([], done=True, info={"step": self.steps})
        observations = [
            {"role": "tool", "name": "echo", "content": f"len={len(assistant_message)} #{k}"}
            for k in range(self.replies)
        ]
        return StepResult(observations, done=False, info={"step": self.steps, "tool_calls": 1})

    def final_reward(self) -> float | None:
        return self.reward
