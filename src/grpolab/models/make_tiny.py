"""`grpolab make-tiny-model`: rebuild the embedded model from scratch, deterministically.

Warm-start data come from the project's own task generators, drawn from the *train* split of the
default seed, so the default run's validation and test questions are never seen by the warm
start: the before/after accuracy that `grpolab train` prints is on questions held out from both.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grpolab.config.schema import DataConfig
from grpolab.data import build_messages, build_splits
from grpolab.data.base import Example
from grpolab.models.tiny_model import (
    WarmStartExample,
    build_model,
    build_tokenizer,
    save_tiny,
    warm_start,
)
from grpolab.rollout.backend import HFGenerator, SamplingParams

DEFAULT_SEED = 42  # data.seed of the presets: their val/test splits are excluded from the warm start
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

# Tool-use traces: 2-digit multiplication, which the tiny model cannot do in its head. Half the
# traces call the calculator and copy its result, half answer directly with a near miss, so the
# model uses the tool "sometimes and imperfectly" and GRPO has a behaviour to reinforce.
AGENT_DATA: dict[str, Any] = {"task": "arithmetic", "operations": ["*"], "min_num": 10, "max_num": 99}
AGENT_SHARE = 0.3  # share of breadth-stage batches that are tool-use traces
SYSTEM_PROMPT_RATE = 0.5  # share of single-turn examples shown with their task's system prompt
TOOL_USE_RATE = 0.5

# (task settings, share of the single-turn warm-start batches). The default task dominates; the others give
# the presets small_numbers and mixed a model that is not at 0%.
MIXTURE: list[tuple[dict[str, Any], float]] = [
    ({"task": "arithmetic", "operations": ["+"], "min_num": 0, "max_num": 99, "train_size": 5000}, 0.6),
    ({"task": "small_numbers", "train_size": 200, "val_size": 50, "test_size": 100}, 0.2),
    ({"task": "mixed", "train_size": 2000}, 0.2),
]


def _tool_trace(example: Example, rng: random.Random, tool_use_rate: float = TOOL_USE_RATE) -> WarmStartExample:
    from grpolab.envs.env import CalculatorEnv

    env = CalculatorEnv(system_prompt="")
    messages = env.reset(example.row())
    a, _, b = example.question.removeprefix("What is ").rstrip("?").split(" ")
    if rng.random() < tool_use_rate:
        call = json.dumps({"name": "calculator", "arguments": {"expression": f"{a} * {b}"}})
        result = env.step(f"<tool_call>{call}</tool_call>").observations[0]["content"]
        return WarmStartExample(
            messages,
            f"<tool_call>{call}</tool_call>",
            example.answer,
            tools=env.tools,
            observations=(str(result),),
            later_targets=(f"<answer>{result}</answer>",),
        )
    guess = int(example.answer) + rng.choice([-10, -1, 1, 10, 100]) * rng.randint(1, 3)
    return WarmStartExample(messages, f"<answer>{guess}</answer>", example.answer, tools=env.tools)


def _copy_drill(example: Example, rng: random.Random) -> WarmStartExample:
    """A tool trace whose tool result is an arbitrary number and whose only trained reply is the answer
    that repeats it. Measured: with real results the model kept estimating the product from the
    question (tool "3220" -> answer "3108", 0 of 60 copied after 600 steps); only when the result
    cannot be derived from the question does copying it become the one way to lower the loss."""
    trace = _tool_trace(example, rng, tool_use_rate=1.0)
    shown = str(rng.randint(100, 9999))
    return dataclasses.replace(
        trace, observations=(shown,), later_targets=(f"<answer>{shown}</answer>",), first_trained_reply=1
    )


def _pools(mixture: list[tuple[dict[str, Any], float]]) -> list[tuple[DataConfig, list[Example], float]]:
    pools = []
    for settings, share in mixture:
        data = DataConfig(**settings)
        pools.append((data, build_splits(data, DEFAULT_SEED).train, share))
    return pools


def _as_warm_start(
    example: Example, data: DataConfig, rng: random.Random, system_prompt_rate: float
) -> WarmStartExample:
    # Some with the task's system prompt, most without: the presets for the tiny model drop it to
    # keep sequences short, other configs keep it; the model should answer either way.
    variant = data.model_copy(update={"system_prompt": None if rng.random() < system_prompt_rate else ""})
    return WarmStartExample(build_messages(example, variant), f"<answer>{example.answer}</answer>", example.answer)


def heldout_accuracy(model: Any, tok: Any, examples: list[Example], data: DataConfig) -> float:
    generator = HFGenerator(model, tok.pad_token_id, [tok.eos_token_id])
    prompts = []
    for example in examples:
        text = tok.apply_chat_template(build_messages(example, data), add_generation_prompt=True, tokenize=False)
        prompts.append(tok(text, add_special_tokens=False)["input_ids"])
    out = generator.generate(prompts, SamplingParams(max_new_tokens=24, greedy=True))
    correct = 0
    for example, ids in zip(examples, out.completions):
        match = ANSWER.search(tok.decode(ids, skip_special_tokens=True))
        correct += bool(match and match.group(1).strip() == example.answer)
    return correct / len(examples)


@dataclass(frozen=True)
class _Material:
    """What every build stage draws from: the task pools, the held-out questions, the tool-trace pool."""

    pools: list[tuple[DataConfig, list[Example], float]]
    heldout: list[Example]
    agent_pool: list[Example]

    @property
    def default_data(self) -> DataConfig:
        return self.pools[0][0]

    @property
    def default_pool(self) -> list[Example]:
        return self.pools[0][1]

    def accuracy(self, model: Any, tok: Any) -> float:
        prompt_data = self.default_data.model_copy(update={"system_prompt": ""})
        return heldout_accuracy(model, tok, self.heldout, prompt_data)


def _material() -> _Material:
    pools = _pools(MIXTURE)
    return _Material(
        pools=pools,
        heldout=build_splits(pools[0][0], DEFAULT_SEED).val,
        agent_pool=build_splits(DataConfig(**AGENT_DATA), DEFAULT_SEED).train,
    )


def make_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    target_accuracy: float = 0.35,
    max_steps: int = 4000,
    breadth_steps: int = 200,
) -> dict[str, Any]:
    """Build, warm-start and save the tiny model, in two stages.

    1. Skill: the default task alone (no system prompt, as the default preset prompts it) at lr 3e-3
       until held-out greedy accuracy reaches `target_accuracy`. Measured here: mixing other tasks
       and tool traces into this stage from the start kept the loss flat for 700 steps.
    2. Breadth: `breadth_steps` at lr 1e-3 on a mixture (the default task, small_numbers, mixed,
       system-prompt variants, and tool-use traces) so that the other presets and the agent preset
       start from a model that knows their formats. Held-out accuracy is measured again after it.
    """
    torch.set_num_threads(2)
    tok = build_tokenizer()
    model = build_model(tok, seed)
    material = _material()
    pools, default_data, default_pool = material.pools, material.default_data, material.default_pool
    agent_pool = material.agent_pool

    def accuracy(m: Any) -> float:
        return material.accuracy(m, tok)

    def skill_batch(rng: random.Random, n: int) -> list[WarmStartExample]:
        return [_as_warm_start(rng.choice(default_pool), default_data, rng, 0.0) for _ in range(n)]

    def breadth_batch(rng: random.Random, n: int) -> list[WarmStartExample]:
        # a batch is all tool traces or all one task: long rows would pad every short one
        if rng.random() < AGENT_SHARE:  # half as many rows: a trace is ~4x longer
            return [_tool_trace(rng.choice(agent_pool), rng) for _ in range(n // 2)]
        data, pool, _ = rng.choices(pools, weights=[p[2] for p in pools])[0]
        return [_as_warm_start(rng.choice(pool), data, rng, SYSTEM_PROMPT_RATE) for _ in range(n)]

    started = time.perf_counter()
    skill = warm_start(
        model, tok, skill_batch, accuracy, seed=seed, max_steps=max_steps, batch_size=64,
        eval_every=25, target_accuracy=target_accuracy,
    )  # fmt: skip
    breadth = warm_start(
        model, tok, breadth_batch, accuracy, seed=seed + 1, lr=1e-3, max_steps=breadth_steps, batch_size=64,
        eval_every=50, target_accuracy=2.0, warmup=10,
    )  # fmt: skip
    card = {
        "architecture": "LlamaForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tok),
        "seed": seed,
        "warm_start_steps": skill.steps + breadth.steps,
        "warm_start_seconds": round(time.perf_counter() - started, 1),
        "target_accuracy": target_accuracy,
        "accuracy_after_skill_stage": skill.heldout_accuracy,
        "heldout_greedy_accuracy": breadth.heldout_accuracy,
        "heldout": "the 100 validation questions of the default task (seed 42), never trained on",
        "skill_stage": {"data": MIXTURE[0][0], "steps": skill.steps, "lr": 3e-3},
        "breadth_stage": {"steps": breadth.steps, "lr": 1e-3, "system_prompt_rate": SYSTEM_PROMPT_RATE},
        "mixture": [{"data": s, "share": w} for s, w in MIXTURE],
        "tool_traces": {"data": AGENT_DATA, "share_of_batches": AGENT_SHARE, "tool_use_rate": TOOL_USE_RATE},
        "history": {"skill": skill.history, "breadth": breadth.history},
    }
    save_tiny(model, tok, out_dir, card)
    return card


def make_tiny_agent_model(base_dir: Path, out_dir: Path, *, seed: int = 0, steps: int = 600) -> dict[str, Any]:
    """Stage 3, for the agent presets: continue from the tiny model at lr 1e-3 on three kinds of batch,
    in equal shares: tool-use traces (half call the calculator and copy its result, half guess), copy
    drills (`_copy_drill`), and the default task (so its arithmetic is kept). Measured: the breadth
    stage alone (~1,900 traces) never produced a well-formed call; traces alone taught the call but
    not reading its result (see docs/experiments.md)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.set_num_threads(2)
    tok: Any = AutoTokenizer.from_pretrained(str(base_dir))
    model = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    material = _material()
    default_data, default_pool, agent_pool = material.default_data, material.default_pool, material.agent_pool

    def batch(rng: random.Random, n: int) -> list[WarmStartExample]:
        kind = rng.random()
        if kind < 1 / 3:
            return [_tool_trace(rng.choice(agent_pool), rng) for _ in range(n // 2)]
        if kind < 2 / 3:
            return [_copy_drill(rng.choice(agent_pool), rng) for _ in range(n // 2)]
        return [_as_warm_start(rng.choice(default_pool), default_data, rng, 0.0) for _ in range(n)]

    def accuracy(m: Any) -> float:
        return material.accuracy(m, tok)

    started = time.perf_counter()
    result = warm_start(
        model, tok, batch, accuracy, seed=seed + 2, lr=1e-3, max_steps=steps, batch_size=64,
        eval_every=100, target_accuracy=2.0, warmup=10,
    )  # fmt: skip
    card = json.loads((base_dir / "build.json").read_text())
    card.update(
        {
            "warm_start_steps": card["warm_start_steps"] + result.steps,
            "warm_start_seconds": round(card["warm_start_seconds"] + time.perf_counter() - started, 1),
            "heldout_greedy_accuracy": result.heldout_accuracy,
            "agent_stage": {
                "steps": result.steps,
                "lr": 1e-3,
                "batches": {"tool_traces": 1 / 3, "copy_drills": 1 / 3, "default_task": 1 / 3},
                "from": "tiny",
            },
        }
    )
    save_tiny(model, tok, out_dir, card)
    return card
