"""The groups one step trains on: sample B questions x G rollouts, score them, and (DAPO dynamic
sampling) keep sampling until B groups carry a learning signal.

A group whose rewards are all equal has advantage 0 everywhere: it costs a forward and backward and
teaches nothing. With `grpo.filter_zero_std_groups` such groups are dropped, and up to
`grpo.dynamic_sampling_rounds` further rounds of B fresh questions are sampled to refill the batch
(DAPO, Yu et al. 2025, section 3.2). Kept groups are taken in sampling order, the surplus of the last
round is discarded, and if the rounds run out the step trains on the groups it has (possibly none).

Advantages are computed over the kept groups only, so `scale_rewards=batch` uses the std of the
batch that is trained on. Under several processes every rank samples its contiguous share of each
round's B questions; rewards are gathered so that every rank makes the same keep decisions.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from grpolab.algo.advantages import AdvantageStats, decoupled_advantages, group_advantages
from grpolab.config.schema import Config
from grpolab.data.base import Example
from grpolab.data.order import QuestionOrder
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Shards
from grpolab.rewards import RewardScores, RewardSet
from grpolab.rewards.inputs import reward_inputs
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.sampler import RolloutSampler
from grpolab.rollout.types import Rollout
from grpolab.train.step_metrics import reward_tensor


@dataclass
class Round:
    """One round of sampling: this rank's questions and rollouts, and every rank's rewards."""

    examples: list[Example]  # this rank's share of the round's B questions
    rollouts: list[Rollout]  # G per question, question-major
    scores: RewardScores  # of `rollouts`
    rewards: torch.Tensor  # [B, G] over all ranks, NaN = unscored
    epoch_ends: bool
    per_function: torch.Tensor | None = None  # [B, G, K] over all ranks (reward_aggregation=normalize_then_sum)


@dataclass
class StepGroups:
    """What one step trains on (this rank's share) and everything that was sampled to get it."""

    examples: list[Example]  # kept questions of this rank
    rollouts: list[Rollout]  # their rollouts; question_index points into `examples`
    adv: torch.Tensor  # [len(rollouts)] advantage of each kept rollout
    breakdowns: list[tuple[dict[str, float | None], float | None]]  # per kept rollout: rewards, total
    rounds: list[Round]
    kept_groups: int  # over all ranks
    stats: AdvantageStats  # group statistics of everything sampled (what the rewards looked like)
    extras: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # per kept rollout: log_extra's

    @property
    def sampled_rewards(self) -> torch.Tensor:
        return torch.cat([r.rewards for r in self.rounds])  # [rounds*B, G]

    @property
    def sampled_rollouts(self) -> list[Rollout]:
        return [rollout for r in self.rounds for rollout in r.rollouts]

    @property
    def epoch_ends(self) -> bool:
        return any(r.epoch_ends for r in self.rounds)


def has_spread(rewards: torch.Tensor) -> torch.Tensor:
    """[B, G] -> [B] bool: the group's scored rewards are not all equal (NaN = unscored, ignored)."""
    scored = ~torch.isnan(rewards)
    high = torch.where(scored, rewards, torch.full_like(rewards, -torch.inf)).max(dim=1).values
    low = torch.where(scored, rewards, torch.full_like(rewards, torch.inf)).min(dim=1).values
    return (scored.sum(dim=1) > 1) & (high > low)


def merged_scores(rounds: Sequence[Round]) -> RewardScores:
    """The rounds' scores as one batch (for per-function reward metrics)."""
    if len(rounds) == 1:
        return rounds[0].scores
    first = rounds[0].scores
    return RewardScores(
        labels=first.labels,
        per_function={label: [v for r in rounds for v in r.scores.per_function[label]] for label in first.labels},
        total=[v for r in rounds for v in r.scores.total],
        errors={label: sum(r.scores.errors.get(label, 0) for r in rounds) for label in first.labels},
        logged={name: sum(r.scores.logged.get(name, 0.0) for r in rounds) / len(rounds) for name in first.logged},
        extra_columns={k: [v for r in rounds for v in r.scores.extra_columns.get(k, [])] for k in first.extra_columns},
        timeouts={label: sum(r.scores.timeouts.get(label, 0) for r in rounds) for label in first.labels},
    )


@dataclass
class RoundSource:
    """Where a step's rounds come from: the question order over the training questions, the rollout
    sampler with its sampling parameters, the reward set, and the policy's shards (gathered while
    generating). `seconds` adds up the time spent generating and scoring."""

    order: QuestionOrder
    questions: list[Example]  # the training split
    rollouts: RolloutSampler
    params: SamplingParams
    rewards: RewardSet
    shards: Shards
    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: {"generation": 0.0, "reward": 0.0})

    def sample_round(self, ctx: DistContext, group: int, aggregation: str) -> Round:
        """The next B questions (the same on every rank), this rank's share sampled and scored."""
        indices, epoch_ends = self.order.next_batch()
        examples = ctx.shard([self.questions[i] for i in indices])  # whole groups per rank
        started = time.perf_counter()
        with self.shards.gathered():
            rollouts = self.rollouts.sample(examples, self.params)
        scored = time.perf_counter()
        scores = self.rewards.score(reward_inputs(examples, rollouts))
        self.seconds["generation"] += scored - started
        self.seconds["reward"] += time.perf_counter() - scored
        rewards = torch.cat(ctx.gather_objects(reward_tensor(scores, len(examples), group)))  # [B, G]
        per_function = None
        if aggregation == "normalize_then_sum":
            per_function = torch.cat(ctx.gather_objects(function_rewards(scores, len(examples), group)))
        return Round(examples, rollouts, scores, rewards, epoch_ends, per_function)


def step_sampling_params(cfg: Config) -> SamplingParams:
    """How a training step samples: G completions per question with the generation settings."""
    g = cfg.generation
    return SamplingParams(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        num_samples=cfg.grpo.num_generations,
        repetition_penalty=g.repetition_penalty,
    )


def sample_groups(cfg: Config, ctx: DistContext, source: RoundSource) -> StepGroups:
    """Sample rounds of B questions until B groups are kept (one round when filtering is off)."""
    group, batch = cfg.grpo.num_generations, cfg.train.questions_per_step
    rounds: list[Round] = []
    kept: list[tuple[int, int]] = []  # (round, group index in the round's B), in sampling order
    while True:
        rounds.append(source.sample_round(ctx, group, cfg.grpo.reward_aggregation))
        rewards = rounds[-1].rewards
        keep = has_spread(rewards) if cfg.grpo.filter_zero_std_groups else torch.ones(batch, dtype=torch.bool)
        kept += [(len(rounds) - 1, int(g)) for g in keep.nonzero().flatten()][: batch - len(kept)]
        if len(kept) == batch or len(rounds) > cfg.grpo.dynamic_sampling_rounds:
            break
    adv = kept_advantages(cfg, rounds, kept) if kept else torch.zeros(0, group)  # [K, G]
    _, stats = group_advantages(torch.cat([r.rewards for r in rounds]), cfg.grpo.scale_rewards)
    return this_ranks_groups(ctx, rounds, kept, adv, stats, group, batch // ctx.world_size)


def this_ranks_groups(
    ctx: DistContext,
    rounds: list[Round],
    kept: list[tuple[int, int]],
    adv: torch.Tensor,
    stats: AdvantageStats,
    group: int,
    local: int,
) -> StepGroups:
    """The kept groups this rank sampled (local: questions per rank per round), adv [K, G] of all kept."""
    out = StepGroups([], [], torch.zeros(0), [], rounds, len(kept), stats)
    mine = [(p, r, g - ctx.rank * local) for p, (r, g) in enumerate(kept) if g // local == ctx.rank]
    for _, r, g in mine:
        source = rounds[r]
        index = len(out.examples)
        out.examples.append(source.examples[g])
        for row in range(g * group, (g + 1) * group):
            out.rollouts.append(dataclasses.replace(source.rollouts[row], question_index=index))
            out.breakdowns.append((source.scores.breakdown(row), source.scores.total[row]))
            out.extras.append(source.scores.extras(row))
    rows = [p for p, _, _ in mine]
    out.adv = adv[rows].reshape(-1) if rows else torch.zeros(0)  # [k*G], row k*G + g as in rollouts
    return out


def function_rewards(scores: RewardScores, num_questions: int, group: int) -> torch.Tensor:
    """Each reward function's values as [B, G, K] (K functions in config order), NaN = not scored."""
    columns = [[math.nan if v is None else float(v) for v in scores.per_function[label]] for label in scores.labels]
    return torch.tensor(columns, dtype=torch.float32).T.reshape(num_questions, group, len(scores.labels))


def kept_advantages(cfg: Config, rounds: Sequence[Round], kept: list[tuple[int, int]]) -> torch.Tensor:
    """The kept groups' advantages [K, G]: from the weighted totals, or (normalize_then_sum, GDPO)
    from each reward function normalised on its own."""
    if cfg.grpo.reward_aggregation == "normalize_then_sum":
        values = torch.stack([rounds[r].per_function[g] for r, g in kept])  # type: ignore[index]  # [K, G, F]
        weights = torch.tensor([spec.weight for spec in cfg.rewards.functions], dtype=torch.float32)
        return decoupled_advantages(values, weights)[0]
    return group_advantages(torch.stack([rounds[r].rewards[g] for r, g in kept]), cfg.grpo.scale_rewards)[0]


def sample_records(
    groups: StepGroups, limit: int, describe: Callable[[Rollout], dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """samples.jsonl rows for the first `limit` trained rollouts, each with its own advantage."""
    records: list[dict[str, Any]] = []
    for i, rollout in enumerate(groups.rollouts[:limit]):
        example = groups.examples[rollout.question_index]
        rewards, total = groups.breakdowns[i]
        records.append(
            {
                "prompt": example.question,
                "completion": rollout.text,
                "answer": example.answer,
                "category": example.category,
                "rewards": rewards,
                "reward": total,
                "advantage": float(groups.adv[i]),
                "truncated": rollout.truncated,
                **(groups.extras[i] if i < len(groups.extras) else {}),
                **(describe(rollout) if describe is not None else {}),
            }
        )
    return records
