"""The one place that turns scored rollouts into reward inputs (training and evaluation both call it,
so a reward sees the same thing in both)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpolab.data.base import Example
from grpolab.rewards.api import RewardInputs
from grpolab.rewards.environment import episode_environments, episode_rewards
from grpolab.rollout.types import Rollout


def _completion_messages(rollout: Rollout) -> list[dict[str, Any]]:
    """TRL's conversational completion: the messages after the prompt (an agent's turns and tool
    results), or the one assistant message of a single-turn rollout."""
    if rollout.messages:
        first = next((i for i, m in enumerate(rollout.messages) if m.get("role") == "assistant"), None)
        if first is not None:
            return list(rollout.messages[first:])
    return [{"role": "assistant", "content": rollout.text}]


def reward_inputs(examples: Sequence[Example], rollouts: Sequence[Rollout]) -> RewardInputs:
    """Rollout i answers examples[rollouts[i].question_index]. Rewards get the question (our built-ins)
    or, for a conversational dataset, the prompt and completion as messages (user functions, as TRL)."""
    asked = [examples[r.question_index] for r in rollouts]
    conversational = any(e.messages is not None for e in asked)
    return RewardInputs(
        prompts=[e.question for e in asked],
        completions=[r.text for r in rollouts],
        completion_ids=[r.completion_ids for r in rollouts],
        rows=[e.row() for e in asked],
        trajectories=[r.messages or [] for r in rollouts] if rollouts and rollouts[0].messages else None,
        completion_lengths=[sum(r.completion_mask) for r in rollouts],
        env_rewards=episode_rewards(rollouts),
        environments=episode_environments(rollouts),
        prompt_messages=[e.messages or [{"role": "user", "content": e.question}] for e in asked]
        if conversational
        else None,
        completion_messages=[_completion_messages(r) for r in rollouts] if conversational else None,
    )
