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

import inspect
from collections.abc import Sequence
from typing import Any

from grpolab.config.load import ConfigError
from grpolab.envs.trl_tools import TrlSetup
from grpolab.rewards.api import BoundReward, RewardSet


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


def environment_reward(cls: Any) -> BoundReward:
    """TRL's environment-owned reward: get_reward() of the episodes run by exactly `cls`, None elsewhere."""
    if inspect.iscoroutinefunction(cls.get_reward):

        async def scored_async(environments: list[Any]) -> list[float | None]:
            return [await e.get_reward() if type(e) is cls else None for e in environments]

        return BoundReward(cls.__name__, scored_async, 1.0, {})

    def scored(environments: list[Any]) -> list[float | None]:
        return [e.get_reward() if type(e) is cls else None for e in environments]

    return BoundReward(cls.__name__, scored, 1.0, {})


def with_environment_rewards(rewards: RewardSet, setup: TrlSetup, reward_funcs_given: bool) -> RewardSet:
    """The run's rewards plus each environment's get_reward(). As in TRL, an environment that owns
    its reward makes reward_funcs optional: without them, its reward is the only one (not the
    config's rewards)."""
    owned = [environment_reward(cls) for cls in setup.reward_owners]
    if not owned:
        return rewards
    base = rewards.rewards if reward_funcs_given else []
    taken = {r.label for r in base}
    for reward in owned:
        if reward.label in taken:
            raise ConfigError(
                f"reward_funcs: a reward is called '{reward.label}', the name of the environment whose get_reward() "
                "is logged under it; rename the function"
            )
    return RewardSet([*base, *owned], on_error=rewards.on_error)
