"""An environment's final_reward() reaches the rewards as the `env` reward, weighted by the config."""

from __future__ import annotations

import json

import pytest

from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from grpolab.config.load import ConfigError
from grpolab.config.schema import RewardsConfig
from grpolab.rewards import RewardError, RewardInputs, build_rewards
from grpolab.rewards.environment import episode_rewards
from grpolab.rollout.types import Rollout
from run_helpers import QUICK, read_metrics


def inputs(env_rewards):
    n = len(env_rewards)
    return RewardInputs(["q"] * n, ["c"] * n, [[1]] * n, [{"answer": "1"}] * n, env_rewards=env_rewards)


def test_env_reward_is_weighted_like_any_other():
    rewards = build_rewards(RewardsConfig.model_validate([{"name": "env", "weight": 2.0}, "answer_format"]))
    scores = rewards.score(inputs([1.0, 0.25, None]))
    assert scores.per_function["env"] == [1.0, 0.25, None]
    # answer_format is 0 for "c": totals are 2 x env, and a None drops out of the sum (0 left)
    assert scores.total == [2.0, 0.5, 0.0]
    assert scores.metrics()["rewards/env/none_frac"] == pytest.approx(1 / 3)


def test_single_turn_samples_have_no_env_reward():
    rewards = build_rewards(RewardsConfig.model_validate(["env"]))
    with pytest.raises(RewardError, match="needs agent rollouts"):
        rewards.score(RewardInputs(["q"], ["c"], [[1]], [{}]))


def test_episode_rewards_come_from_the_rollouts_info():
    agent = [Rollout(0, [1], [2], [1], "t", False, messages=[], info={"env_reward": v}) for v in (0.5, None)]
    assert episode_rewards(agent) == [0.5, None]
    assert episode_rewards([Rollout(0, [1], [2], [1], "t", False)]) is None  # single-turn


def test_the_config_refuses_env_without_agent_rollouts():
    with pytest.raises(ConfigError, match=r"agent\.enabled=true"):
        load_config("default", ["rewards=[env]"], env_file=None, environ={})


@pytest.mark.slow
def test_a_scripted_envs_final_reward_reaches_training_rewards(tmp_path):
    cfg = load_config(
        "agent_tiny",
        [
            *QUICK,
            "train.max_steps=2",
            "generation.max_new_tokens=96",
            "agent.max_turns=2",
            "eval.size=4",
            "data.test_size=4",
            "eval.every_steps=0",
            "logging.sample_every=1",
            "logging.samples_per_step=8",
            "agent.env=scripted_envs:ToolUseJudgedEnv",
            "rewards=[{name: env, weight: 2.0}]",
            f"train.output_dir={tmp_path}",
        ],
        env_file=None,
        environ={},
    )
    summary = GRPOTrainer(args=cfg).train()
    samples = [json.loads(line) for line in (summary.run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples
    verdicts = []
    for sample in samples:
        # the env's verdict on this very episode: a tool call -> 1, an answer without one -> 0, a
        # first turn cut at max_new_tokens never reached the env -> None
        called = any(m["role"] == "tool" for m in sample["messages"])
        expected = 1.0 if called else (None if sample["truncated"] else 0.0)
        assert sample["rewards"]["env"] == expected
        assert sample["reward"] == (None if expected is None else 2.0 * expected)  # weighted by the config
        verdicts.append(expected)
    assert 1.0 in verdicts  # the warm-started model calls the tool often enough for the test to bite
    rows = [r for r in read_metrics(summary.run_dir) if "loss" in r]
    assert rows and all(r["reward"] == pytest.approx(2.0 * r["rewards/env/mean"]) for r in rows)
