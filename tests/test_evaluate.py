"""pass@k against hand arithmetic, and the evaluation driver with a scripted generator and rewards."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from grpolab.config.schema import RewardsConfig
from grpolab.data.base import Example
from grpolab.eval.evaluate import evaluate, pass_at_k
from grpolab.parallel.distributed import DistContext
from grpolab.rewards import RewardInputs, RewardScores, RewardSet, build_rewards
from grpolab.rewards.api import BoundReward
from grpolab.rollout.backend import GenerationOutput, SamplingParams

# --- pass@k -------------------------------------------------------------------------------------


def test_pass_at_k_hand_values() -> None:
    # n=10 samples, c=3 correct.
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # 1 - C(7,1)/C(10,1) = 1 - 7/10
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5) = 11/12
    assert pass_at_k(10, 3, 10) == 1.0  # C(7,10) = 0: all 10 samples include the 3 correct ones
    assert pass_at_k(10, 0, 5) == 0.0  # nothing correct
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2) = 1 - 1/6


@pytest.mark.parametrize(("n", "c", "k"), [(4, 1, 5), (3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_is_monotone_in_k_and_exact(nc: tuple[int, int]) -> None:
    n, c = nc
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    # Non-decreasing in k exactly (no tolerance): pass@1 <= pass@5 <= pass@10 holds by construction.
    assert all(a <= b for a, b in itertools.pairwise(values))
    for k in (1, (n + 1) // 2, n):
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert values[k - 1] == pytest.approx(float(exact), abs=1e-9)


# --- fakes --------------------------------------------------------------------------------------

EOS = ord("$")  # the stop token; not a special token, so only stop_ids can strip it from the text


class CharTokenizer:
    """One token per character (id = code point), no special tokens."""

    def encode(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)


TOK = CharTokenizer()


class ScriptedGenerator:
    """Greedy: `greedy[question]`. Sampling: `samples[question]` (exactly num_samples of them), or, if
    `random_from` is set, a choice among those strings drawn from the global torch RNG, like HF generate."""

    def __init__(self, greedy: dict[str, str], samples: dict[str, list[str]] | None = None) -> None:
        self.greedy, self.samples = greedy, samples or {}
        self.random_from: list[str] | None = None
        self.calls: list[tuple[int, SamplingParams]] = []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        self.calls.append((len(prompts), params))
        rows: list[str] = []
        for ids in prompts:
            question = TOK.decode(ids).removeprefix("Q:")
            if params.greedy:
                rows.append(self.greedy[question])
            elif self.random_from is not None:
                picks = torch.randint(len(self.random_from), (params.num_samples,)).tolist()
                rows.extend(self.random_from[i] for i in picks)
            else:
                assert len(self.samples[question]) == params.num_samples
                rows.extend(self.samples[question])
        completions = [[*TOK.encode(text), EOS] for text in rows]
        return GenerationOutput(completions, [False] * len(rows), [[0.0] * len(c) for c in completions])


def numeric(completions: list[str], answer: list[str]) -> list[float | None]:
    # 1 if the text after "A:" is the gold answer; "ERR" stands for a sample the reward cannot score.
    return [None if text == "ERR" else float(text.split("A:")[-1] == gold) for text, gold in zip(completions, answer)]


def starts_with_a(completions: list[str]) -> list[float | None]:
    return [float(text.startswith("A:")) for text in completions]


class FakeRewards(RewardSet):
    """numeric x1 + format x0.5 (a None drops out of the total), recording what it was asked to score."""

    def __init__(self, labels: tuple[str, ...] = ("numeric", "format")) -> None:
        fns: dict[str, tuple[Callable[..., list[float | None]], float]] = {
            "numeric": (numeric, 1.0),
            "format": (starts_with_a, 0.5),
        }
        super().__init__([BoundReward(name, fns[name][0], fns[name][1], {}) for name in labels])
        self.seen: list[RewardInputs] = []

    def score(self, inputs: RewardInputs) -> RewardScores:
        self.seen.append(inputs)
        return super().score(inputs)


def prompt_ids(ex: Example) -> list[int]:
    return TOK.encode("Q:" + ex.question)


EXAMPLES = [
    Example("1+1", "2", "add"),
    Example("2+2", "4", "add"),
    Example("3*3", "9", "mul"),
    Example("2*5", "10", "mul"),
]
GREEDY = {"1+1": "A:2", "2+2": "A:5", "3*3": "9", "2*5": "ERR"}


def run(gen: ScriptedGenerator, rewards: Any = None, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = dict(
        max_new_tokens=8,
        batch_size=3,
        pass_k=[],
        num_samples=0,
        temperature=0.8,
        top_p=1.0,
        format_reward="format",
        stop_ids=[EOS],
        seed=0,
        ctx=DistContext.single(),
    )
    kwargs.update(overrides)
    examples = kwargs.pop("examples", EXAMPLES)
    return evaluate(gen, TOK, examples, prompt_ids, rewards or FakeRewards(), **kwargs)


# --- evaluate -----------------------------------------------------------------------------------


def test_greedy_metrics_by_hand() -> None:
    gen = ScriptedGenerator(GREEDY)
    result = run(gen)
    # Correct: "A:2" yes; "A:5" no (gold 4); "9" yes (format no); "ERR" reward None -> wrong.
    # numeric = [1, 0, 1, None], format = [1, 1, 0, 0], total = [1.5, 0.5, 1.0, 0.0]
    # lengths (chars + eos) = [4, 4, 2, 4]
    assert result.metrics() == {
        "eval/accuracy": 0.5,
        "eval/format": 0.5,
        "eval/mean_reward": pytest.approx(3.0 / 4),
        "eval/completion_length": 3.5,
        "eval/add/accuracy": 0.5,
        "eval/mul/accuracy": 0.5,
        "eval/rewards/numeric/mean": pytest.approx(2 / 3),  # None is left out of the mean
        "eval/rewards/format/mean": 0.5,
    }
    # batch_size 3 over 4 questions: two greedy generate calls of 3 and 1 prompts.
    assert [(size, p.greedy, p.num_samples) for size, p in gen.calls] == [(3, True, 1), (1, True, 1)]
    r = result.records[0]
    assert (r.question, r.gold, r.completion, r.correct, r.category) == ("1+1", "2", "A:2", True, "add")
    assert [rec.correct for rec in result.records] == [True, False, True, False]
    assert [rec.formatted for rec in result.records] == [True, True, False, False]


def test_rewards_receive_decoded_text_ids_rows_and_lengths() -> None:
    rewards = FakeRewards()
    run(ScriptedGenerator(GREEDY), rewards)
    first = rewards.seen[0]
    assert first.completions == ["A:2", "A:5", "9"]  # the stop token dropped from the text ...
    assert first.completion_ids[0] == [*TOK.encode("A:2"), EOS]  # ... but kept in the ids
    assert first.prompts[0] == "1+1"  # the question, as in training
    assert first.rows[2]["category"] == "mul" and first.completion_lengths == [4, 4, 2]


def test_pass_at_k_from_samples() -> None:
    samples = {
        "1+1": ["A:2"] * 4,  # c = 4
        "2+2": ["A:1", "A:3", "ERR", "x"],  # c = 0
        "3*3": ["A:9", "A:8", "9", "A:1"],  # c = 2 ("9" is correct without the format)
        "2*5": ["A:10", "A:1", "A:2", "A:3"],  # c = 1
    }
    gen = ScriptedGenerator(GREEDY, samples)
    result = run(gen, pass_k=[1, 2, 4], num_samples=4)
    m = result.metrics()
    # pass@1 = mean(c/n) = (1 + 0 + 1/2 + 1/4) / 4 = 7/16
    assert m["eval/pass@1"] == pytest.approx(7 / 16)
    # pass@2: c=4 -> 1; c=0 -> 0; c=2 -> 1 - C(2,2)/C(4,2) = 5/6; c=1 -> 1 - C(3,2)/C(4,2) = 1/2
    assert m["eval/pass@2"] == pytest.approx((1 + 0 + 5 / 6 + 1 / 2) / 4)
    # pass@4: any question with c >= 1 passes -> 3/4
    assert m["eval/pass@4"] == pytest.approx(3 / 4)
    assert m["eval/pass@1"] <= m["eval/pass@2"] <= m["eval/pass@4"]
    assert m["eval/accuracy"] == 0.5  # accuracy stays greedy
    assert [r.samples_correct for r in result.records] == [4, 0, 2, 1]
    sampled = [p for _, p in gen.calls if not p.greedy]
    assert [(p.num_samples, p.temperature, p.top_p) for p in sampled] == [(4, 0.8, 1.0)] * 2


def test_num_samples_zero_means_largest_k() -> None:
    samples = {q: ["A:2"] * 2 for q in GREEDY}
    result = run(ScriptedGenerator(GREEDY, samples), pass_k=[2, 1], num_samples=0)
    assert result.num_samples == 2 and list(result.metrics())[1:3] == ["eval/pass@1", "eval/pass@2"]
    with pytest.raises(ValueError, match="num_samples"):
        run(ScriptedGenerator(GREEDY, samples), pass_k=[5], num_samples=2)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone() -> None:
    gen = ScriptedGenerator(GREEDY)
    gen.random_from = ["A:2", "A:4", "A:9", "A:10", "A:0"]

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = run(gen, pass_k=[1, 8], num_samples=8, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # evaluation consumed nothing from training's stream

    again = run(gen, pass_k=[1, 8], num_samples=8, seed=7)
    assert [r.samples_correct for r in again.records] == [r.samples_correct for r in first.records]
    other = [run(gen, pass_k=[1, 8], num_samples=8, seed=s).records for s in range(1, 4)]
    assert any([r.samples_correct for r in recs] != [r.samples_correct for r in first.records] for recs in other)


def test_format_is_skipped_when_not_configured_or_not_in_the_set() -> None:
    assert "eval/format" not in run(ScriptedGenerator(GREEDY), format_reward=None).metrics()
    only_numeric = FakeRewards(labels=("numeric",))
    result = run(ScriptedGenerator(GREEDY), only_numeric, format_reward="format")
    assert "eval/format" not in result.metrics() and result.records[0].formatted is None


def test_missing_correctness_reward_is_an_error() -> None:
    with pytest.raises(ValueError, match="'numeric' is not in the reward set"):
        run(ScriptedGenerator(GREEDY), FakeRewards(labels=("format",)))


def test_prefix_and_json() -> None:
    result = run(ScriptedGenerator(GREEDY))
    assert set(result.metrics("test")) == {k.replace("eval/", "test/", 1) for k in result.metrics()}
    data = json.loads(result.to_json())
    assert data["metrics"]["eval/accuracy"] == 0.5 and data["num_questions"] == 4
    assert data["records"][3] == {
        "question": "2*5",
        "gold": "10",
        "completion": "ERR",
        "correct": False,
        "category": "mul",
        "reward": 0.0,
        "length": 4,
        "formatted": False,
        "samples_correct": None,
    }


def test_with_hf_generator_on_a_tiny_model() -> None:
    """The real backend: greedy is deterministic and seeded sampling repeats, with rows laid out as
    evaluate expects (question i's samples are rows i*n .. i*n+n-1)."""
    from grpolab.rollout.backend import HFGenerator
    from run_helpers import micro_llama

    model = micro_llama(0)
    gen = HFGenerator(model, pad_id=0, stop_ids=[1])
    digits = SimpleNamespace(decode=lambda ids, skip_special_tokens=False: " ".join(map(str, ids)))

    def parity(completion_ids: list[list[int]]) -> list[float | None]:
        # "correct" = the completion's first token is even: a deterministic function of the ids.
        return [float(ids[0] % 2 == 0) for ids in completion_ids]

    def parity_rewards() -> RewardSet:
        return RewardSet([BoundReward("numeric", parity, 1.0, {})])

    examples = [Example(str(i), "", "c") for i in range(5)]
    kwargs: dict[str, Any] = dict(
        max_new_tokens=4,
        batch_size=2,
        pass_k=[1, 3],
        num_samples=3,
        temperature=1.0,
        top_p=1.0,
        format_reward=None,
        seed=3,
        ctx=DistContext.single(),
    )

    def build(ex: Example) -> list[int]:
        return [2 + int(ex.question)] * (1 + int(ex.question))  # prompts of different lengths

    torch.manual_seed(11)
    expected_next = torch.rand(2)
    torch.manual_seed(11)
    a = evaluate(gen, digits, examples, build, parity_rewards(), **kwargs)
    assert torch.equal(torch.rand(2), expected_next)
    b = evaluate(gen, digits, examples, build, parity_rewards(), **kwargs)
    assert a.records == b.records and a.metrics() == b.metrics()
    assert a.metrics()["eval/pass@1"] <= a.metrics()["eval/pass@3"]


def test_with_the_built_in_rewards() -> None:
    rewards = build_rewards(
        RewardsConfig.model_validate([{"name": "numeric"}, {"name": "answer_format", "weight": 0.2}])
    )
    greedy = {"1+1": "<answer>2</answer>", "2+2": "it is 4", "3*3": "<answer>8</answer>", "2*5": ""}
    result = run(ScriptedGenerator(greedy), rewards, format_reward="answer_format")
    m = result.metrics()
    # numeric = [1, 1, 0, 0] (the last number counts without tags), answer_format = [1, 0, 1, 0]
    assert (m["eval/accuracy"], m["eval/format"]) == (0.5, 0.5)
    assert m["eval/mean_reward"] == pytest.approx((1.2 + 1.0 + 0.2 + 0.0) / 4)
