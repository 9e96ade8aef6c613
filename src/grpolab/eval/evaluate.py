"""Evaluation: greedy accuracy, unbiased pass@k, format rate, mean reward, per-category breakdown.

- accuracy is greedy pass@1 (deterministic): one completion per question, correct when the
  correctness reward is > 0.5 (None, i.e. a reward that failed, counts as wrong).
- pass@k uses the unbiased estimator of Chen et al. 2021 over n sampled completions per question,
  never "max over k samples", which is biased upwards for k < n and noisier.
- Sampling is seeded inside a forked RNG: evaluating in the middle of training does not change the
  training run's random stream (so a run with evaluation draws the same rollouts as one without, and
  resume equality does not depend on when evaluation happened).
- Under several processes (`ctx`), each rank generates and scores its contiguous share of the
  questions; the scored completions are gathered in rank order and every rank summarises the same
  whole set, so the metrics are those of one process (greedy exactly; sampled pass@k draws differ).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from grpolab.config.load import ConfigError
from grpolab.data.base import Example
from grpolab.observe.console import Working
from grpolab.parallel.distributed import DistContext
from grpolab.rewards import RewardInputs, RewardScores, RewardSet
from grpolab.rewards.inputs import reward_inputs
from grpolab.rollout.backend import Generator, SamplingParams
from grpolab.rollout.single_turn import sample_completions
from grpolab.rollout.types import Rollout

if TYPE_CHECKING:
    from grpolab.config.schema import Config
    from grpolab.rollout.sampler import RolloutSampler


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k): the chance that k of the n samples drawn without
    replacement contain at least one of the c correct ones.

    Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
    Every factor lies in [0, 1) and shrinks as k grows, so the result is non-decreasing in k, exactly
    and in floating point (rounding is monotone). Worked example, n=10, c=3, k=5:
    (1 - 5/8)(1 - 5/9)(1 - 5/10) = 3/8 * 4/9 * 1/2 = 1/12 = C(7,5)/C(10,5) = 21/252 -> 11/12.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n (got n={n}, c={c})")
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1 (got k={k})")
    if n < k:
        raise ValueError(f"pass@{k} needs at least k samples per question (got n={n})")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


@dataclass
class EvalRecord:
    """One question's greedy result (what `grpolab eval` writes and the report shows)."""

    question: str
    gold: str
    completion: str
    correct: bool
    category: str
    reward: float | None  # weighted total; None when no reward function could score it
    length: int
    formatted: bool | None = None
    samples_correct: int | None = None  # c of num_samples sampled completions (pass@k)


@dataclass
class EvalResult:
    accuracy: float
    mean_reward: float
    completion_length: float
    format_accuracy: float | None
    pass_at: dict[int, float]
    category_accuracy: dict[str, float]
    reward_means: dict[str, float]
    num_samples: int
    records: list[EvalRecord] = field(default_factory=list)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        out = {f"{prefix}/accuracy": self.accuracy}
        out.update({f"{prefix}/pass@{k}": v for k, v in sorted(self.pass_at.items())})
        if self.format_accuracy is not None:
            out[f"{prefix}/format"] = self.format_accuracy
        out[f"{prefix}/mean_reward"] = self.mean_reward
        out[f"{prefix}/completion_length"] = self.completion_length
        out.update({f"{prefix}/{cat}/accuracy": v for cat, v in sorted(self.category_accuracy.items())})
        out.update({f"{prefix}/rewards/{name}/mean": v for name, v in self.reward_means.items()})
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(
            {
                "metrics": self.metrics(),
                "num_questions": len(self.records),
                "num_samples": self.num_samples,
                "records": [asdict(r) for r in self.records],
            },
            indent=indent,
        )


@dataclass
class _Scored:
    """Completions of one generate pass (row i*S + j is sample j of question i) with their scores."""

    texts: list[str]
    lengths: list[int]
    per_function: dict[str, list[float | None]]
    total: list[float | None]

    @classmethod
    def concatenate(cls, parts: Sequence[_Scored]) -> _Scored:
        """The parts in order, as if one pass had scored them all (a part may be empty)."""
        merged = _Scored([], [], defaultdict(list), [])
        for part in parts:
            merged.texts.extend(part.texts)
            merged.lengths.extend(part.lengths)
            merged.total.extend(part.total)
            for name, values in part.per_function.items():
                merged.per_function[name].extend(values)
        return merged


RolloutFn = Callable[[Sequence[Example], SamplingParams], list[Rollout]]


class Scorer(Protocol):
    """What evaluation needs of a reward set (`grpolab.rewards.RewardSet` is one)."""

    def score(self, inputs: RewardInputs) -> RewardScores: ...


def _generate_and_score(
    generator: Generator,
    tokenizer: Any,
    examples: Sequence[Example],
    prompt_ids: list[list[int]],
    reward_set: Scorer,
    params: SamplingParams,
    batch_size: int,
    stop_ids: list[int],
    rollout_fn: RolloutFn | None = None,
    progress: Callable[[str], None] | None = None,
) -> _Scored:
    scored = _Scored([], [], defaultdict(list), [])
    s = params.num_samples
    what = "greedy" if params.greedy else f"{s} samples each"
    for start in range(0, len(examples), batch_size):
        if progress is not None:
            progress(f"{start}/{len(examples)} questions, {what}")
        chunk = list(examples[start : start + batch_size])
        if rollout_fn is not None:  # the run's RolloutSampler: agent episodes run with their tools
            rollouts = rollout_fn(chunk, params)
        else:
            chunk_prompts = prompt_ids[start : start + batch_size]
            rollouts = sample_completions(generator, tokenizer, chunk_prompts, params, stop_ids)
        if len(rollouts) != len(chunk) * s:
            raise RuntimeError(f"generator returned {len(rollouts)} rows for {len(chunk)} x {s}")
        # Rewards see exactly what they see in training: the same builder of their inputs.
        scores = reward_set.score(reward_inputs(chunk, rollouts))
        for name, values in scores.per_function.items():
            scored.per_function[name].extend(values)
        scored.total.extend(scores.total)
        scored.texts.extend(r.text for r in rollouts)
        scored.lengths.extend(sum(r.completion_mask) for r in rollouts)
    return scored


def _is_correct(value: float | None) -> bool:
    return value is not None and value > 0.5


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def evaluate(
    generator: Generator,
    tokenizer: Any,
    examples: list[Example],
    build_prompt_ids: Callable[[Example], list[int]],
    reward_set: Scorer,
    *,
    max_new_tokens: int,
    batch_size: int,
    pass_k: list[int],
    num_samples: int,
    temperature: float,
    top_p: float,
    format_reward: str | None,
    correctness_reward: str = "numeric",
    stop_ids: list[int] | None = None,
    rollout_fn: RolloutFn | None = None,
    seed: int,
    ctx: DistContext,
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate `examples`: greedy accuracy, format rate, mean reward, per category; pass@k sampled.

    `reward_set.score(RewardInputs) -> RewardScores` (grpolab.rewards) must include the
    `correctness_reward` label; `format_reward` is reported only if it is in the set. num_samples = 0
    means max(pass_k). stop_ids: the generator's stop tokens, stripped from the text the rewards see.
    The global torch RNG is the same afterwards as before. ctx: split the questions over its ranks
    (every rank must call this with the same `examples`; every rank returns the same result).
    """
    stops = list(stop_ids or [])
    if not examples:
        raise ValueError("evaluate: no examples")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1 (got {batch_size})")
    n = num_samples or max(pass_k, default=0)
    if pass_k and n < max(pass_k):
        raise ValueError(f"evaluate: num_samples ({n}) must be >= the largest k ({max(pass_k)})")
    local = ctx.shard(examples, even=False, what="evaluation questions")
    prompt_ids = [build_prompt_ids(ex) for ex in local]
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + ctx.rank)
        greedy = _generate_and_score(
            generator,
            tokenizer,
            local,
            prompt_ids,
            reward_set,
            SamplingParams(max_new_tokens=max_new_tokens, greedy=True),
            batch_size,
            stops,
            rollout_fn,
            progress,
        )
        sampled = None
        if pass_k:
            params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, num_samples=n)
            sampled = _generate_and_score(
                generator, tokenizer, local, prompt_ids, reward_set, params, batch_size, stops, rollout_fn, progress
            )
    if ctx.enabled:
        parts = ctx.gather_objects((greedy, sampled))  # rank order = question order (contiguous shards)
        greedy = _Scored.concatenate([g for g, _ in parts])
        sampled = _Scored.concatenate([s for _, s in parts if s is not None]) if sampled is not None else None
    if correctness_reward not in greedy.per_function:
        raise ValueError(
            f"evaluate: correctness reward {correctness_reward!r} is not in the reward set "
            f"(have {sorted(greedy.per_function)})"
        )
    return _summarise(examples, greedy, sampled, n, pass_k, correctness_reward, format_reward)


def _summarise(
    examples: list[Example],
    greedy: _Scored,
    sampled: _Scored | None,
    n: int,
    pass_k: list[int],
    correctness_reward: str,
    format_reward: str | None,
) -> EvalResult:
    """Metrics and per-question records from the scored greedy (and sampled) completions."""
    correct = [_is_correct(v) for v in greedy.per_function[correctness_reward]]
    formatted: list[bool] | None = None
    if format_reward is not None and format_reward in greedy.per_function:
        formatted = [v is not None and v > 0 for v in greedy.per_function[format_reward]]

    samples_correct: list[int] | None = None
    pass_at: dict[int, float] = {}
    if sampled is not None:
        flags = [_is_correct(v) for v in sampled.per_function[correctness_reward]]
        samples_correct = [sum(flags[i * n : (i + 1) * n]) for i in range(len(examples))]
        pass_at = {k: _mean([pass_at_k(n, c, k) for c in samples_correct]) for k in sorted(set(pass_k))}

    by_category: dict[str, list[bool]] = defaultdict(list)
    records = []
    for i, ex in enumerate(examples):
        by_category[ex.category].append(correct[i])
        records.append(
            EvalRecord(
                question=ex.question,
                gold=ex.answer,
                completion=greedy.texts[i],
                correct=correct[i],
                category=ex.category,
                reward=greedy.total[i],
                length=greedy.lengths[i],
                formatted=None if formatted is None else formatted[i],
                samples_correct=None if samples_correct is None else samples_correct[i],
            )
        )
    reward_means = {}
    for name, values in greedy.per_function.items():
        present = [float(v) for v in values if v is not None]
        if present:
            reward_means[name] = _mean(present)
    return EvalResult(
        accuracy=_mean([float(c) for c in correct]),
        # Like rewards' own means: a completion no function could score (total None) is left out.
        mean_reward=_mean([v for v in greedy.total if v is not None]),
        completion_length=_mean([float(x) for x in greedy.lengths]),
        format_accuracy=None if formatted is None else _mean([float(f) for f in formatted]),
        pass_at=pass_at,
        category_accuracy={cat: _mean([float(c) for c in v]) for cat, v in by_category.items()},
        reward_means=reward_means,
        num_samples=n if sampled is not None else 0,
        records=records,
    )


def evaluate_examples(
    cfg: Config,
    sampler: RolloutSampler,
    examples: list[Example],
    reward_set: Scorer,
    ctx: DistContext,
    status: str | None = None,
) -> EvalResult:
    """THE evaluation of a run: the trainer's validation, its before/after report and `grpolab eval`
    all call this, with the run's own rollout sampler (so an agent is evaluated with its tools).
    status: a line that says what is evaluated and how far it got, for an evaluation that no
    progress bar covers (the one before training)."""
    e = cfg.eval
    working = Working(status or "", quiet=cfg.logging.quiet or status is None)
    with working:
        return evaluate(
            sampler.generator,
            sampler.tokenizer,
            examples,
            sampler.prompt_ids,
            reward_set,
            max_new_tokens=cfg.generation.max_new_tokens,
            batch_size=e.batch_size,
            pass_k=e.pass_k,
            num_samples=e.num_samples or max(e.pass_k, default=0),
            temperature=e.temperature,
            top_p=cfg.generation.top_p,
            format_reward=e.format_reward,
            correctness_reward=e.correctness_reward,
            stop_ids=sampler.stop_ids,
            rollout_fn=sampler.sample,
            seed=cfg.train.seed,
            ctx=ctx,
            progress=working.update,
        )


def evaluation_reward_set(cfg: Config, training: RewardSet) -> RewardSet:
    """The training rewards, plus the correctness and format rewards that evaluation reads (built-ins
    at weight 0: they add to the breakdown but not to the reward being optimised)."""
    from grpolab.config.openr1 import OPENR1_REWARDS
    from grpolab.config.schema import RewardSpec
    from grpolab.rewards.registry import build_one, reward_registry

    bound = list(training.rewards)
    labels = {b.label for b in bound}
    for field_name in ("correctness_reward", "format_reward"):
        name = getattr(cfg.eval, field_name)
        if not name or name in labels:
            continue
        if OPENR1_REWARDS.get(name, name) not in reward_registry():
            raise ConfigError(
                f"eval.{field_name}: '{name}' is neither a built-in reward nor one of the run's rewards "
                f"({', '.join(sorted(labels))})"
            )
        bound.append(build_one(RewardSpec(name=name, weight=0.0)))
        labels.add(name)
    return RewardSet(bound, on_error=training.on_error, timeout_s=training.timeout_s)
