"""The scoring machinery: calling convention, None, errors, async, weights, build-time checks."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

import pytest
from rewards_helpers import batch

from grpolab.compat.load import load_config
from grpolab.config.load import ConfigError
from grpolab.config.schema import RewardsConfig
from grpolab.rewards import RewardError, RewardSet, build_rewards, reward_registry
from grpolab.rewards.api import BoundReward


def reward_set(*fns: Any, weights: list[float] | None = None, on_error: str = "raise") -> RewardSet:
    weights = weights or [1.0] * len(fns)
    bound = [BoundReward(getattr(f, "__name__", "f"), f, w, {}) for f, w in zip(fns, weights)]
    return RewardSet(bound, on_error=on_error)  # type: ignore[arg-type]


def const(value: float | None) -> Any:
    def fn(completions: list[str]) -> list[float | None]:
        return [value] * len(completions)

    fn.__name__ = f"const_{value}"
    return fn


def test_default_config_builds_and_scores() -> None:
    rewards = build_rewards(RewardsConfig())
    assert rewards.labels == ["numeric", "answer_format"] and rewards.weights == [1.0, 0.2]
    scores = rewards.score(batch(["<think>\nhm\n</think>\n<answer>\n42\n</answer>", "41"]))
    # sample 0: numeric 1, one non-empty <answer> 1 -> 1 + 0.2 = 1.2; sample 1: 0 and 0 -> 0
    assert scores.per_function == {"numeric": [1.0, 0.0], "answer_format": [1.0, 0.0]}
    assert scores.total == pytest.approx([1.2, 0.0])
    assert scores.breakdown(0) == {"numeric": 1.0, "answer_format": 1.0}


def test_weights_without_renormalisation() -> None:
    # [1, 0] with weights [0.7, 0.3] -> 0.7 * 1 + 0.3 * 0 = 0.7
    scores = reward_set(const(1.0), const(0.0), weights=[0.7, 0.3]).score(batch(["a"]))
    assert scores.total == pytest.approx([0.7])


def test_none_drops_out_of_total_and_mean() -> None:
    def half(completions: list[str]) -> list[float | None]:
        return [None if i % 2 else 1.0 for i in range(len(completions))]

    scores = reward_set(half, const(0.5), weights=[2.0, 1.0]).score(batch(["a", "b", "c", "d"]))
    # scored samples: 2*1 + 0.5 = 2.5; None samples: only 0.5 (weight 2 is not shifted onto the other)
    assert scores.total == pytest.approx([2.5, 0.5, 2.5, 0.5])
    m = scores.metrics()
    assert m["rewards/half/mean"] == 1.0 and m["rewards/half/std"] == 0.0
    assert m["rewards/half/none_frac"] == 0.5 and "rewards/half/errors" not in m


def test_all_none_sample_total_is_none_and_metrics_skip_mean() -> None:
    scores = reward_set(const(None), const(None)).score(batch(["a", "b"]))
    assert scores.total == [None, None]
    m = scores.metrics()
    assert "rewards/const_None/mean" not in m and m["rewards/const_None/none_frac"] == 1.0


def test_std_is_sample_std() -> None:
    def values(completions: list[str]) -> list[float]:
        return [0.0, 1.0, 2.0, 3.0]

    # mean 1.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; / (4 - 1) -> std sqrt(5/3)
    m = reward_set(values).score(batch(list("abcd"))).metrics()
    assert m["rewards/values/mean"] == 1.5 and m["rewards/values/std"] == pytest.approx(math.sqrt(5 / 3))


def flaky(completions: list[str]) -> list[float]:
    if any(c == "boom" for c in completions):
        raise ValueError("bad sample")
    return [1.0] * len(completions)


def test_raise_names_first_failing_sample() -> None:
    with pytest.raises(RewardError, match=r"reward 'flaky' failed on sample 1: ValueError\('bad sample'\)"):
        reward_set(flaky).score(batch(["ok", "boom", "boom"]))


def test_skip_counts_none_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="grpolab.rewards"):
        scores = reward_set(flaky, const(0.5), on_error="skip").score(batch(["ok", "boom", "ok", "boom"]))
    assert scores.per_function["flaky"] == [1.0, None, 1.0, None]
    assert scores.errors == {"flaky": 2, "const_0.5": 0}
    assert scores.total == pytest.approx([1.5, 0.5, 1.5, 0.5])
    assert scores.metrics()["rewards/flaky/errors"] == 2.0
    assert "reward 'flaky' raised on 2 of 4 samples (first: sample 1" in caplog.text


def test_batch_level_failure() -> None:
    def needs_two(completions: list[str]) -> list[float]:
        if len(completions) < 2:
            return [0.0]
        raise RuntimeError("batch bug")

    with pytest.raises(RewardError, match="failed on the batch"):
        reward_set(needs_two).score(batch(["a", "b"]))
    scores = reward_set(needs_two, on_error="skip").score(batch(["a", "b"]))
    assert scores.per_function["needs_two"] == [None, None] and scores.errors["needs_two"] == 2


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([1.0], "returned 1 values for 2 samples"),
        ([1.0, float("nan")], r"non-finite value \(nan\) for sample 1"),
        ([float("inf"), 1.0], r"non-finite value \(inf\) for sample 0"),
        (["1", 1.0], "returned '1' for sample 0"),
        (1.0, "must return a list"),
    ],
)
def test_bad_results_are_errors_even_with_skip(result: Any, message: str) -> None:
    def bad(completions: list[str]) -> Any:
        return result

    with pytest.raises(RewardError, match=rf"reward 'bad' .*{message}"):
        reward_set(bad, on_error="skip").score(batch(["a", "b"]))


def test_async_rewards_run_concurrently() -> None:
    async def slow_a(completions: list[str]) -> list[float]:
        await asyncio.sleep(0.4)
        return [1.0] * len(completions)

    async def slow_b(completions: list[str]) -> list[float]:
        await asyncio.sleep(0.4)
        return [2.0] * len(completions)

    start = time.perf_counter()
    scores = reward_set(slow_a, slow_b, flaky).score(batch(["a", "b"]))
    elapsed = time.perf_counter() - start
    assert scores.total == [4.0, 4.0]
    assert elapsed < 0.75  # concurrent: ~0.4 s, sequential would be >= 0.8 s


def test_async_reward_inside_running_loop() -> None:
    async def one(completions: list[str]) -> list[float]:
        return [1.0] * len(completions)

    async def main() -> list[float | None]:
        return reward_set(one).score(batch(["a"])).total

    assert asyncio.run(main()) == [1.0]


def test_async_failure_is_recovered_per_sample() -> None:
    async def afail(completions: list[str]) -> list[float]:
        if "boom" in completions:
            raise KeyError("x")
        return [1.0] * len(completions)

    scores = reward_set(afail, on_error="skip").score(batch(["a", "boom"]))
    assert scores.per_function["afail"] == [1.0, None]
    with pytest.raises(RewardError, match="failed on sample 1: KeyError"):
        reward_set(afail).score(batch(["a", "boom"]))


def test_score_from_worker_thread() -> None:
    rewards = build_rewards(RewardsConfig.model_validate(["numeric", "accuracy"]))
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(s=rewards.score(batch([r"\boxed{42}"]))))
    thread.start()
    thread.join(30)
    assert out["s"].per_function == {"numeric": [1.0], "accuracy": [1.0]}


def test_columns_and_params_reach_user_function(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RewardsConfig.model_validate(
        [
            {"fn": "user_rewards_fixture:shout", "bonus": 0.5, "weight": 2.0},
            {"fn": "user_rewards_fixture:by_category", "alias": "cat"},
        ]
    )
    rewards = build_rewards(cfg)
    assert rewards.labels == ["shout", "cat"]
    scores = rewards.score(batch(["LOUD", "quiet"], category=["x", "skip"]))
    # LOUD: shout 1.5 * 2 + cat 1 = 4; quiet: shout 0 * 2, cat None -> 0
    assert scores.per_function == {"shout": [1.5, 0.0], "cat": [1.0, None]}
    assert scores.total == [4.0, 0.0]


def test_missing_column_is_a_clear_error() -> None:
    def wants_topic(completions: list[str], topic: list[str]) -> list[float]:
        return [0.0] * len(completions)

    with pytest.raises(RewardError, match=r"needs 'topic'.*columns: answer, category, question"):
        reward_set(wants_topic).score(batch(["a"]))


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        (["numerc"], "unknown reward 'numerc'; did you mean 'numeric'?"),
        (
            [{"name": "cosine_scaled", "max_lenn": 5}],
            "reward 'cosine_scaled': unknown param 'max_lenn'; did you mean 'max_len'?",
        ),
        (
            [{"name": "cosine_scaled", "max_len": "long"}],
            "reward 'cosine_scaled': param 'max_len': Input should be a valid integer",
        ),
        ([{"name": "repetition_penalty", "max_penalty": 0.5}], "max_penalty must be <= 0"),
        (
            [{"name": "length", "correctness": "exact"}],
            "param 'correctness': Input should be 'accuracy' or 'numeric'",
        ),
        ([{"name": "soft_overlong", "cache": 4}], "param 'max_completion_len' is required"),
        ([{"name": "soft_overlong", "max_completion_len": 10, "cache": 20}], "cache must be in"),
        ([{"name": "mark", "think_tag": "<think>"}], "think_tag must be a bare tag name"),
        ([{"name": "numeric", "completions": 1}], "'completions' is filled from the batch"),
        (["numeric", "numeric"], "label 'numeric' is used twice"),
        ([{"fn": "no_such_module_xyz:f"}], "cannot import module 'no_such_module_xyz'"),
        ([{"fn": "user_rewards_fixture:shuot"}], "has no 'shuot'; did you mean 'shout'?"),
        ([{"fn": "user_rewards_fixture:NOT_CALLABLE"}], "is not callable"),
        ([{"fn": "user_rewards_fixture"}], "must look like 'package.module:function'"),
        ([], "at least one reward"),
    ],
)
def test_build_errors(rewards: list[Any], message: str) -> None:
    cfg = RewardsConfig.model_validate(rewards)
    with pytest.raises(ConfigError) as info:
        build_rewards(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_kwargs_function_accepts_any_param() -> None:
    rewards = build_rewards(RewardsConfig.model_validate([{"fn": "user_rewards_fixture:by_category", "x": 1}]))
    assert rewards.rewards[0].params == {"x": 1}


def test_registry_lists_every_builtin_with_description() -> None:
    registry = reward_registry()
    expected = {
        "accuracy", "numeric", "format", "answer_format", "tag_count", "reasoning_steps", "cosine_scaled",
        "repetition_penalty", "length", "soft_overlong", "match_format_exactly", "match_format_approximately",
        "check_answer", "check_numbers", "hard_format", "mark", "judge",
    }  # fmt: skip
    assert expected <= set(registry)
    for info in registry.values():
        assert info.description and "\n" not in info.description
    assert registry["cosine_scaled"].params["max_len"] == 1000
    assert registry["repetition_penalty"].params == {"ngram_size": 3, "max_penalty": -1.0}


def test_build_is_cheap() -> None:
    start = time.perf_counter()
    build_rewards(RewardsConfig.model_validate(["accuracy", "format", "cosine_scaled", "length"]))
    assert time.perf_counter() - start < 0.5


def test_openr1_preset_loads_and_builds() -> None:
    cfg = load_config("openr1_rewards", env_file=None, environ={})
    rewards = build_rewards(cfg.rewards)
    assert rewards.labels == [
        "accuracy",
        "format",
        "reasoning_steps",
        "cosine_scaled",
        "repetition_penalty",
        "length",
    ]
    assert cfg.data.system_prompt is not None
    assert cfg.data.system_prompt.endswith(
        "Respond in the following format: <think>\n...\n</think>\n<answer>\n...\n</answer>"
    )
    assert cfg.model.finetune == "lora" and cfg.eval.format_reward == "format"
    assert rewards.rewards[3].params["min_value_wrong"] == 0.0  # the open-r1 recipe value
