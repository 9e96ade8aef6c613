"""Scoring a batch with several reward functions: the calling convention, None handling, errors.

Every reward function, built-in or user-written, is called the way TRL calls it: keyword arguments,
one list entry per sample. `completions`, `prompts`, `completion_ids`, `trajectories`,
`completion_lengths`, `env_rewards` (agents: each episode's `final_reward()`), `environments`
(agents: each episode's environment object, as TRL passes it) and every dataset column by name
(`answer=[...]`, `category=[...]`) are offered, and, as in TRL, `trainer_state` (a
transformers `TrainerState`: global_step, max_steps, epoch; None outside a training run),
`log_metric(name, value)` (logged with the step's metrics, averaged over the batch's calls) and
`log_extra(column, values)` (a column of samples.jsonl);
a function receives only the keywords it declares (all of them if it takes `**kwargs`), followed by
its configured params. It returns one `float | None` per sample.

How this departs from TRL, and why:
- None is "could not score": excluded from that function's mean/std and from the total (TRL turns
  None into NaN and nansums, which is the same total), and counted in `none_frac`.
- A function that raises is re-run sample by sample so that the error names the first bad sample
  (with `on_error="skip"` the failing samples become None and are counted instead of stopping).
- A wrong-length result or a NaN/inf is always an error: that is a bug in the function, not a
  sample that cannot be scored.
- Every call has a time limit (`rewards.timeout_s`, 0 = none): a call still running after it counts
  as None for its whole batch, with a warning and `rewards/<fn>/timeouts` (samples). A plain function
  runs in a daemon worker thread for that; Python cannot kill a thread, so a hung one is left behind
  (it ends with the process) and the run goes on. Async functions are awaited with a deadline in a
  worker thread's event loop, so even a coroutine that blocks its loop cannot hang the run.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grpolab.deadline import TIMED_OUT, call_with_deadline, gather_with_deadline, run_async
from grpolab.errors import UserError

logger = logging.getLogger("grpolab.rewards")

RewardValue = float | None
# The keywords every function may ask for, besides dataset columns and its own params.
STANDARD_INPUTS = (
    "completions", "prompts", "completion_ids", "trajectories", "completion_lengths", "env_rewards",
    "environments", "trainer_state", "log_metric", "log_extra",
)  # fmt: skip


class RewardError(UserError, RuntimeError):
    """A reward function failed or returned something that is not one score per sample."""


@dataclass
class RewardInputs:
    """One batch of N samples to score (N = B questions x G completions)."""

    prompts: list[str]
    completions: list[str]
    completion_ids: list[list[int]]
    rows: list[dict[str, Any]]
    trajectories: list[list[dict[str, Any]]] | None = None
    completion_lengths: list[int] | None = None
    env_rewards: list[float | None] | None = None  # agents: the environment's final_reward() per episode
    environments: list[Any] | None = None  # agents: each episode's environment (TRL's `environments`)
    # Conversational prompts (TRL's conversational format): what user functions receive instead of
    # `prompts` / `completions`: the prompt messages, and the completion as a list of messages.
    prompt_messages: list[list[dict[str, Any]]] | None = None
    completion_messages: list[list[dict[str, Any]]] | None = None
    trainer_state: Any = None  # TRL's: a transformers TrainerState during training
    # what the rewards sent through log_metric / log_extra while this batch was scored
    logged_metrics: dict[str, list[float]] = field(default_factory=dict)
    extra_columns: dict[str, list[Any]] = field(default_factory=dict)

    def log_metric(self, name: str, value: float) -> None:
        self.logged_metrics.setdefault(name, []).append(float(value))

    def log_extra(self, column: str, values: list[Any]) -> None:
        self.extra_columns.setdefault(column, []).extend(values)

    def __post_init__(self) -> None:
        n = len(self.completions)
        sizes = {
            "prompts": len(self.prompts),
            "completion_ids": len(self.completion_ids),
            "rows": len(self.rows),
        }
        if self.trajectories is not None:
            sizes["trajectories"] = len(self.trajectories)
        if self.completion_lengths is not None:
            sizes["completion_lengths"] = len(self.completion_lengths)
        if self.env_rewards is not None:
            sizes["env_rewards"] = len(self.env_rewards)
        if self.environments is not None:
            sizes["environments"] = len(self.environments)
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"RewardInputs: {len(self.completions)} completions but {bad}")

    def __len__(self) -> int:
        return len(self.completions)

    def keywords(self, conversational: bool = False) -> dict[str, Any]:
        """Standard inputs and dataset columns as TRL-style lists; a column missing from a row is None.
        conversational: prompts and completions as messages when the batch has them."""
        columns: dict[str, list[Any]] = {}
        for key in dict.fromkeys(k for row in self.rows for k in row):
            columns[key] = [row.get(key) for row in self.rows]
        lengths = self.completion_lengths
        if lengths is None:
            lengths = [len(ids) for ids in self.completion_ids]
        standard = {
            "completions": self.completions,
            "prompts": self.prompts,
            "completion_ids": self.completion_ids,
            "trajectories": self.trajectories,
            "completion_lengths": lengths,
            "env_rewards": self.env_rewards,
            "environments": self.environments,
            "trainer_state": self.trainer_state,
            "log_metric": self.log_metric,
            "log_extra": self.log_extra,
        }
        if conversational and self.prompt_messages is not None and self.completion_messages is not None:
            standard.update(prompts=self.prompt_messages, completions=self.completion_messages)
        return {**columns, **standard}


@dataclass
class RewardScores:
    """Per-function scores of a batch and their weighted total."""

    labels: list[str]
    per_function: dict[str, list[RewardValue]]
    total: list[RewardValue]
    errors: dict[str, int] = field(default_factory=dict)
    logged: dict[str, float] = field(default_factory=dict)  # log_metric's names, batch means
    extra_columns: dict[str, list[Any]] = field(default_factory=dict)  # log_extra's, one value per sample
    timeouts: dict[str, int] = field(default_factory=dict)  # samples whose call passed rewards.timeout_s

    def extras(self, i: int) -> dict[str, Any]:
        return {name: values[i] for name, values in self.extra_columns.items() if i < len(values)}

    def metrics(self) -> dict[str, float]:
        """`rewards/{label}/mean`, `/std` (sample std, as TRL logs it) over the scored samples,
        `/none_frac`, and `/errors` when some samples raised. Mean/std are left out when no sample
        of that function was scored, rather than logged as NaN."""
        out: dict[str, float] = {}
        for label in self.labels:
            values = self.per_function[label]
            scored = [v for v in values if v is not None]
            if scored:
                mean = math.fsum(scored) / len(scored)
                var = math.fsum((v - mean) ** 2 for v in scored) / (len(scored) - 1) if len(scored) > 1 else 0.0
                out[f"rewards/{label}/mean"] = mean
                out[f"rewards/{label}/std"] = math.sqrt(var)
            out[f"rewards/{label}/none_frac"] = (len(values) - len(scored)) / len(values) if values else 0.0
            if self.errors.get(label, 0) > 0:
                out[f"rewards/{label}/errors"] = float(self.errors[label])
            if self.timeouts.get(label, 0) > 0:
                out[f"rewards/{label}/timeouts"] = float(self.timeouts[label])
        return {**self.logged, **out}

    def breakdown(self, i: int) -> dict[str, RewardValue]:
        return {label: self.per_function[label][i] for label in self.labels}


@dataclass
class BoundReward:
    """A resolved reward: the callable, its label, weight and configured params."""

    label: str
    fn: Callable[..., Any]
    weight: float
    params: dict[str, Any]
    reads_text: bool = False  # built-ins read text; user functions get messages for conversational data

    def call_kwargs(self, available: dict[str, Any]) -> dict[str, Any]:
        signature = inspect.signature(self.fn)
        takes_all = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if takes_all:
            chosen = dict(available)
        else:
            chosen = {k: v for k, v in available.items() if k in signature.parameters}
        for name, p in signature.parameters.items():
            missing = name not in chosen and name not in self.params and p.default is p.empty
            if missing and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                columns = sorted(k for k in available if k not in STANDARD_INPUTS)
                raise RewardError(
                    f"reward '{self.label}' needs '{name}', which is neither a standard input nor a "
                    f"dataset column (columns: {', '.join(columns) or 'none'})"
                )
        return {**chosen, **self.params}

    def needed_columns(self) -> list[str]:
        """The dataset columns this function cannot run without (a required parameter that is not a
        standard input and not a configured param); a `**kwargs` function names none."""
        signature = inspect.signature(self.fn)
        return [
            name
            for name, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.default is p.empty
            and name not in STANDARD_INPUTS
            and name not in self.params
        ]


def _slice(kwargs: dict[str, Any], keys: Sequence[str], i: int) -> dict[str, Any]:
    return {k: ([v[i]] if k in keys and isinstance(v, list) else v) for k, v in kwargs.items()}


def _check(label: str, result: Any, n: int) -> list[RewardValue]:
    if not isinstance(result, (list, tuple)):
        raise RewardError(f"reward '{label}' must return a list of float|None, got {type(result).__name__}")
    if len(result) != n:
        raise RewardError(f"reward '{label}' returned {len(result)} values for {n} samples")
    values: list[RewardValue] = []
    for i, value in enumerate(result):
        if value is None:
            values.append(None)
            continue
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise RewardError(f"reward '{label}' returned {value!r} for sample {i}; expected float|None") from None
        if not math.isfinite(number):
            raise RewardError(f"reward '{label}' returned a non-finite value ({number}) for sample {i}")
        values.append(number)
    return values


class RewardSet:
    """The configured reward functions of a run; `score` turns a batch into `RewardScores`."""

    def __init__(
        self, rewards: list[BoundReward], on_error: Literal["raise", "skip"] = "raise", timeout_s: float = 0.0
    ) -> None:
        self.rewards = rewards
        self.on_error = on_error
        self.trainer_state: Callable[[], Any] | None = None  # the trainer sets it: TRL's trainer_state
        self.timeout_s = timeout_s  # per call; 0 = no limit

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.rewards]

    @property
    def weights(self) -> list[float]:
        return [r.weight for r in self.rewards]

    def __repr__(self) -> str:
        parts = ", ".join(f"{r.label}x{r.weight:g}" for r in self.rewards)
        return f"RewardSet({parts}; on_error={self.on_error})"

    def score(self, inputs: RewardInputs) -> RewardScores:
        n = len(inputs)
        if inputs.trainer_state is None and self.trainer_state is not None:
            inputs.trainer_state = self.trainer_state()
        available = inputs.keywords()
        conversational = inputs.keywords(conversational=True)
        per_sample_keys = [k for k, v in available.items() if isinstance(v, list) and len(v) == n]
        results: dict[str, list[RewardValue]] = {}
        errors = {r.label: 0 for r in self.rewards}
        timeouts = {r.label: 0 for r in self.rewards}
        pending: list[tuple[BoundReward, dict[str, Any], Any]] = []
        for reward in self.rewards:
            kwargs = reward.call_kwargs(available if reward.reads_text else conversational)
            try:
                out = call_with_deadline(reward.fn, kwargs, self.timeout_s)
            except Exception as err:
                results[reward.label] = self._recover(reward, kwargs, per_sample_keys, n, err, errors)
                continue
            if out is TIMED_OUT:
                results[reward.label] = self._timed_out(reward.label, n, timeouts)
            elif inspect.isawaitable(out):
                pending.append((reward, kwargs, out))
            else:
                results[reward.label] = _check(reward.label, out, n)
        if pending:
            # Async rewards (judges, sandboxes) overlap their waiting; sync ones already ran in order.
            gathered = gather_with_deadline([aw for _, _, aw in pending], self.timeout_s)
            outcomes = run_async(gathered, self.timeout_s, len(pending))
            for (reward, kwargs, _), out in zip(pending, outcomes):
                if out is TIMED_OUT:
                    results[reward.label] = self._timed_out(reward.label, n, timeouts)
                elif isinstance(out, BaseException):
                    if not isinstance(out, Exception):
                        raise out
                    results[reward.label] = self._recover(reward, kwargs, per_sample_keys, n, out, errors)
                else:
                    results[reward.label] = _check(reward.label, out, n)
        per_function = {r.label: results[r.label] for r in self.rewards}
        total: list[RewardValue] = []
        for i in range(n):
            # Like TRL's nansum: a None drops out of the sum, the other weights are not re-normalised.
            terms = [r.weight * v for r in self.rewards if (v := per_function[r.label][i]) is not None]
            total.append(math.fsum(terms) if terms else None)
        logged = {name: math.fsum(values) / len(values) for name, values in inputs.logged_metrics.items() if values}
        return RewardScores(self.labels, per_function, total, errors, logged, inputs.extra_columns, timeouts)

    def _timed_out(self, label: str, n: int, timeouts: dict[str, int]) -> list[RewardValue]:
        timeouts[label] += n
        logger.warning(
            "reward '%s' did not return within rewards.timeout_s=%gs; its %d samples count as None "
            "(a plain function's call is left running in a background thread)", label, self.timeout_s, n,
        )  # fmt: skip
        return [None] * n

    def _recover(
        self,
        reward: BoundReward,
        kwargs: dict[str, Any],
        keys: list[str],
        n: int,
        err: Exception,
        errors: dict[str, int],
    ) -> list[RewardValue]:
        """Re-run a failed vectorised call one sample at a time, to name (or skip) the failing ones.

        For a batch-dependent function (length) the per-sample values of the surviving samples are
        computed on a batch of one; that is the price of keeping the rest of the batch."""
        if isinstance(err, RewardError):
            raise err
        values: list[RewardValue] = []
        failed: list[tuple[int, Exception]] = []
        for i in range(n):
            try:
                out = call_with_deadline(reward.fn, _slice(kwargs, keys, i), self.timeout_s)
                if inspect.isawaitable(out):
                    out = run_async(gather_with_deadline([out], self.timeout_s), self.timeout_s)[0]
                    if isinstance(out, Exception):
                        raise out
                if out is TIMED_OUT:  # here a failure of this sample like any other
                    raise TimeoutError(f"no result within rewards.timeout_s={self.timeout_s:g}s")
                values.extend(_check(reward.label, out, 1))
            except RewardError:
                raise
            except Exception as sample_err:
                if self.on_error == "raise":
                    raise RewardError(f"reward '{reward.label}' failed on sample {i}: {sample_err!r}") from sample_err
                failed.append((i, sample_err))
                values.append(None)
        if not failed:
            # Only the whole batch fails (a batch-level bug): nothing per sample can be trusted.
            if self.on_error == "raise":
                raise RewardError(f"reward '{reward.label}' failed on the batch: {err!r}") from err
            failed = [(i, err) for i in range(n)]
            values = [None] * n
        errors[reward.label] += len(failed)
        first, first_err = failed[0]
        logger.warning(
            "reward '%s' raised on %d of %d samples (first: sample %d, %r); counted as None",
            reward.label, len(failed), n, first, first_err,
        )  # fmt: skip
        return values
