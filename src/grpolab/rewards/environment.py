"""The `env` reward: what the environment itself says about a finished agent episode.

An environment may implement `final_reward() -> float | None` (see envs/env.py): a test suite that
passed, a game that was won, a state that was reached. The rollout loop records it per episode
(`Rollout.info["env_reward"]`); `episode_rewards` hands those values to the reward functions as the
standard input `env_rewards`, and the built-in reward `env` returns them, so the config weighs the
environment's verdict like any other reward:

    rewards:
      - {name: env, weight: 1.0}
      - {name: answer_format, weight: 0.2}

None (the environment has no opinion on this episode) is "could not score", as for every reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def episode_rewards(rollouts: Sequence[Any]) -> list[float | None] | None:
    """Each agent episode's final_reward(); None for single-turn rollouts (no environment)."""
    if not rollouts or rollouts[0].messages is None:
        return None
    return [rollout.info.get("env_reward") for rollout in rollouts]


def episode_environments(rollouts: Sequence[Any]) -> list[Any] | None:
    """Each agent episode's environment object (TRL's `environments` reward input); None for
    single-turn rollouts. An environment that wraps the user's own object (envs/trl_tools.py) hands
    over that object, as TRL does; None for an episode that had no such object."""
    if not rollouts or rollouts[0].messages is None:
        return None
    envs = [rollout.info.get("environment") for rollout in rollouts]
    return [getattr(e, "user_environment", e) for e in envs]


def env(completions: list[str], env_rewards: list[float | None] | None) -> list[float | None]:
    """The environment's own reward of each agent episode (its `final_reward()`); None where it
    gives none. Needs agent rollouts (agent.enabled=true)."""
    if env_rewards is None:
        raise ValueError("the 'env' reward needs agent rollouts (agent.enabled=true): single-turn samples have no env")
    return list(env_rewards)
