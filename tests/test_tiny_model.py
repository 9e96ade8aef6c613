"""Warm-start examples of the embedded models: which tokens are trained, and that a tool trace is
tokenised exactly as an agent rollout of the same conversation would be."""

from __future__ import annotations

import json
import random

from grpolab.data.base import Example
from grpolab.envs.env import CalculatorEnv
from grpolab.models.make_tiny import _copy_drill, _tool_trace
from grpolab.rollout.multi_turn import observation_delta

QUESTION = Example("What is 12 * 34?", "408", "mul")


def trained_text(tok, ids: list[int], trained: list[int]) -> str:
    return tok.decode([t for t, keep in zip(ids, trained) if keep])


def calling_trace(tok):
    rng = random.Random(0)
    for _ in range(20):  # half the traces call the tool: take the first that does
        trace = _tool_trace(QUESTION, rng)
        if trace.observations:
            return trace
    raise AssertionError("no calling trace in 20 draws")


def test_tool_trace_trains_the_call_and_the_copied_answer(tiny_tokenizer):
    from grpolab.models.tiny_model import encode_example

    trace = calling_trace(tiny_tokenizer)
    ids, trained = encode_example(tiny_tokenizer, trace)
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 34"}}</tool_call>'
    assert trace.observations == ("408",)
    assert trained_text(tiny_tokenizer, ids, trained) == f"{call}<|im_end|><answer>408</answer><|im_end|>"


def test_copy_drill_shows_an_arbitrary_result_and_trains_only_the_answer(tiny_tokenizer):
    from grpolab.models.tiny_model import encode_example

    drill = _copy_drill(QUESTION, random.Random(3))
    (shown,) = drill.observations
    assert shown != "408" and drill.later_targets == (f"<answer>{shown}</answer>",)
    ids, trained = encode_example(tiny_tokenizer, drill)
    assert trained_text(tiny_tokenizer, ids, trained) == f"<answer>{shown}</answer><|im_end|>"
    assert "12 * 34" in tiny_tokenizer.decode(ids)  # the call is in the context, untrained


def test_trace_is_tokenised_like_an_agent_rollout(tiny_tokenizer):
    """The warm start must teach the very token sequence the rollout loop builds: prompt, the reply,
    then the observation delta tokenised on its own (agent.rollout.observation_delta)."""
    from grpolab.models.tiny_model import encode_example

    tok = tiny_tokenizer
    trace = calling_trace(tok)
    ids, _ = encode_example(tok, trace)
    env = CalculatorEnv(system_prompt="")
    history = env.reset(QUESTION.row())
    prompt = tok.apply_chat_template(history, tools=env.tools, add_generation_prompt=True, tokenize=False)
    reply = trace.target
    step = env.step(reply)
    delta = observation_delta(tok, [*history], step.observations, env.tools, "<|im_end|>")
    expected = (
        tok(prompt, add_special_tokens=False)["input_ids"]
        + tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        + tok(delta, add_special_tokens=False)["input_ids"]
        + tok(trace.later_targets[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    )  # fmt: skip
    assert ids == expected
    assert json.loads(reply.removeprefix("<tool_call>").removesuffix("</tool_call>"))["name"] == "calculator"
