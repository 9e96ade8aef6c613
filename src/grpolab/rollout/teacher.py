"""A scripted "teacher": the Generator protocol answering each episode with its gold assistant turns.

Fed to `run_agent_rollouts`, it yields trajectories built by the very code that builds RL rollouts:
the same prompt, the same observation deltas, the same completion_mask (the teacher's turns 1, the
tool output and template glue 0 in masked mode). The warm start (train/warm_start.py) imitates them.

Episodes are told apart by their history, as a real engine would see them: on the first call the
prompts come in row order (one episode per row), and on later calls each prompt extends exactly one
episode's last prompt plus the ids the teacher returned for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpolab.rollout.backend import GenerationOutput, SamplingParams


class TeacherGenerator:
    """turns[i]: the assistant messages (text, no end-of-turn) of row i's episode, in order; each is
    returned as the tokenizer's ids plus `stop_id`, with log-prob 0 (the teacher is certain)."""

    def __init__(self, tokenizer: Any, turns: Sequence[Sequence[str]], stop_id: int) -> None:
        self.tokenizer = tokenizer
        self.turns = [list(t) for t in turns]
        self.stop_id = stop_id
        self._seen: list[list[int]] = []  # per episode: last prompt + the ids returned for it
        self._turn: list[int] = []  # per episode: turns returned so far

    def _episode(self, prompt: list[int]) -> int:
        for index, seen in enumerate(self._seen):
            if prompt[: len(seen)] == seen and self._turn[index] < len(self.turns[index]):
                return index
        raise ValueError("teacher: a prompt extends no episode it has answered (one sample per row expected)")

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        if not self._seen:  # the first turn: one prompt per row, in row order
            if len(prompts) != len(self.turns):
                raise ValueError(
                    f"teacher: {len(prompts)} first prompts for {len(self.turns)} rows "
                    "(one sample per row, and every prompt must fit agent.max_total_tokens)"
                )
            self._seen, self._turn = [[] for _ in prompts], [0] * len(prompts)
            episodes = list(range(len(prompts)))
        else:
            episodes = [self._episode(prompt) for prompt in prompts]
        completions, truncated = [], []
        for index, prompt in zip(episodes, prompts):
            text = self.turns[index][self._turn[index]]
            ids = [*self.tokenizer.encode(text, add_special_tokens=False), self.stop_id]
            cut = len(ids) > params.max_new_tokens
            ids = ids[: params.max_new_tokens]
            self._seen[index] = [*prompt, *ids]
            self._turn[index] += 1
            completions.append(ids)
            truncated.append(cut)
        return GenerationOutput(completions, truncated, [[0.0] * len(ids) for ids in completions])
