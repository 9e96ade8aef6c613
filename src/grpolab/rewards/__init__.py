"""Reward functions and the machinery that scores a batch with them.

    rewards = build_rewards(cfg.rewards)          # validates names and params; no model needed
    scores = rewards.score(RewardInputs(prompts, completions, completion_ids, rows))
    scores.total, scores.metrics(), scores.breakdown(i)

The calling convention (TRL-style, vectorised, None = cannot score) is in `api.py`; the built-ins in
`correctness.py`, `format.py`, `shaping.py` and `judge.py`; the exact semantics of each, and where
they differ from the recipe they come from, in docs/rewards.md.
"""

from grpolab.rewards.api import RewardError, RewardInputs, RewardScores, RewardSet
from grpolab.rewards.registry import RewardInfo, build_rewards, reward_registry

__all__ = [
    "RewardError",
    "RewardInfo",
    "RewardInputs",
    "RewardScores",
    "RewardSet",
    "build_rewards",
    "reward_registry",
]
