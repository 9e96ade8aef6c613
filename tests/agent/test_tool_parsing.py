"""Tool calls through the tokenizer's own response parser when it has one, Hermes otherwise.

The tokenizer here is a real transformers 5 tokenizer (char-level, ChatML) given a response
template in a NON-Hermes call format, `[call:NAME]{json}[/call]`: only the model's parser can read
those calls, so a test that passes could not have been served by the Hermes fallback."""

from __future__ import annotations

import json

from agent_fakes import ScriptedGenerator, Turn, char_tokenizer

from grpolab.envs.env import CalculatorEnv, load_env
from grpolab.envs.tool_parsing import response_template, tool_call_parser
from grpolab.envs.tools import ToolCall, parse_tool_calls
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.multi_turn import run_agent_rollouts

BRACKET_CALLS = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"\s*\[call:(?P<name>\w+)\]",
            "close": "[/call]",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close_pattern": r"\s*<\|im_end\|>", "content": "text"},
    },
}
SCHEMA = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "add",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
        },
    }
]
MESSAGES = [{"role": "user", "content": "Q0? What is 2+3?"}]


def with_parser():
    tokenizer = char_tokenizer()
    tokenizer.response_template = BRACKET_CALLS
    return tokenizer


def hermes(name: str, arguments: dict) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_the_models_own_format_is_read_by_its_parser():
    parse = tool_call_parser(with_parser(), MESSAGES, SCHEMA)
    parsed = parse('Let me add. [call:add]{"a": 2, "b": 3}[/call] [call:add]{"a": 1, "b": 1}[/call]')
    assert [p.call for p in parsed] == [ToolCall("add", {"a": 2, "b": 3}), ToolCall("add", {"a": 1, "b": 1})]
    assert parse_tool_calls('[call:add]{"a": 2, "b": 3}[/call]') == []  # Hermes alone sees nothing here


def test_arguments_are_cast_with_the_tools_schema():
    # the template hands back what the model wrote; the tool schema says a and b are integers
    [parsed] = tool_call_parser(with_parser(), MESSAGES, SCHEMA)('[call:add]{"a": "2", "b": "3"}[/call]')
    assert parsed.call == ToolCall("add", {"a": 2, "b": 3})


def test_a_message_without_a_call_has_none():
    assert tool_call_parser(with_parser(), MESSAGES, SCHEMA)("The answer is 5.") == []


def test_a_malformed_call_in_the_models_format_is_an_error_for_the_model():
    [parsed] = tool_call_parser(with_parser(), MESSAGES, SCHEMA)("[call:add]{a: 2[/call]")
    assert parsed.call is None and (parsed.error or "").startswith("malformed tool call")


def test_without_a_response_template_hermes_is_the_parser():
    tokenizer = char_tokenizer()
    assert response_template(tokenizer) is None
    parse = tool_call_parser(tokenizer, MESSAGES, SCHEMA)
    assert [p.call for p in parse(hermes("add", {"a": 2, "b": 3}))] == [ToolCall("add", {"a": 2, "b": 3})]
    assert tool_call_parser(None, MESSAGES, SCHEMA) is parse_tool_calls


def test_a_template_that_does_not_parse_tool_calls_leaves_hermes_in_charge():
    tokenizer = char_tokenizer()
    tokenizer.response_template = {"start_anchor": "x", "fields": {"content": {"content": "text"}}}
    assert tool_call_parser(tokenizer, MESSAGES, SCHEMA) is parse_tool_calls


def test_a_rollout_binds_the_tokenizer_so_the_calculator_answers_the_models_format():
    tokenizer = with_parser()
    scripts = {
        (0, 0): [Turn('[call:calculator]{"expression": "12*34"}[/call]'), Turn("<answer>408</answer>")],
        (0, 1): [Turn(hermes("calculator", {"expression": "1+1"})), Turn("<answer>2</answer>")],
    }
    rollouts = run_agent_rollouts(
        ScriptedGenerator(tokenizer, scripts),
        tokenizer,
        load_env("calculator", {}),
        [{"question": "Q0? What is 12*34?"}],
        params=SamplingParams(max_new_tokens=200, num_samples=2),
        max_turns=3,
        max_total_tokens=5000,
    )
    first, second = rollouts
    assert first.messages is not None and first.messages[3] == {"role": "tool", "name": "calculator", "content": "408"}
    assert first.info["tool_calls"] == 1 and first.info["tool_failures"] == 0
    # the model's template has no Hermes syntax: a Hermes call is not a call for this model
    assert second.info["tool_calls"] == 0 and second.info["turns"] == 1


def test_an_env_used_without_a_rollout_keeps_hermes():
    env = CalculatorEnv()
    env.reset({"question": "What is 2*3?"})
    result = env.step(hermes("calculator", {"expression": "2*3"}))
    assert [o["content"] for o in result.observations] == ["6"]
