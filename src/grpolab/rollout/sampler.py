"""One entry point for sampling trajectories: single-turn completions or multi-turn agent episodes.

Training and evaluation both call `RolloutSampler.sample(examples, params)`, so an agent run is
evaluated the way it is trained (with its tools), and a single-turn run the plain way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpolab.config.schema import Config
from grpolab.data import build_messages
from grpolab.data.base import Example
from grpolab.rollout.backend import Generator, SamplingParams
from grpolab.rollout.single_turn import prompt_ids, sample_completions
from grpolab.rollout.types import Rollout


class RolloutSampler:
    def __init__(
        self, cfg: Config, generator: Generator, tokenizer: Any, stop_ids: list[int], env_factory: Any = None
    ) -> None:
        """env_factory: makes one environment per episode (the Python API's `environment`); None = the
        configured agent.env when agent.enabled, else single-turn."""
        self.cfg = cfg
        self.generator = generator
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.env_factory = env_factory
        if env_factory is None and cfg.agent.enabled:
            from grpolab.envs.env import load_env

            self.env_factory = load_env(cfg.agent.env, cfg.agent.env_params)

    def prompt_ids(self, example: Example) -> list[int]:
        return prompt_ids(self.tokenizer, example, self.cfg.data, self.cfg.generation.max_prompt_length)

    def agent_row(self, example: Example) -> dict[str, Any]:
        """The row an environment starts from; the task's system prompt (answer format) goes first."""
        messages = build_messages(example, self.cfg.data)
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        return {**example.row(), "system_prompt": system, "prompt": messages[-1]["content"]}

    def sample(self, examples: Sequence[Example], params: SamplingParams) -> list[Rollout]:
        """params.num_samples trajectories per example, question-major (k*S + s)."""
        if self.env_factory is None:
            prompts = [self.prompt_ids(e) for e in examples]
            return sample_completions(self.generator, self.tokenizer, prompts, params, self.stop_ids)
        from grpolab.rollout.multi_turn import run_agent_rollouts

        agent = self.cfg.agent
        return run_agent_rollouts(
            self.generator,
            self.tokenizer,
            self.env_factory,
            [self.agent_row(e) for e in examples],
            params,
            max_turns=agent.max_turns,
            max_total_tokens=agent.max_total_tokens,
            mode=agent.mode,
        )
