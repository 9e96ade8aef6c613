"""Tool-call parsing and dispatch: every bad call becomes an observation, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpolab.envs.tools import INVALID_TOOL, Tool, ToolCall, ToolError, execute, parse_tool_calls


def _add(a: str, b: str) -> str:
    return str(int(a) + int(b))


def _broken(x: str) -> str:
    raise RuntimeError("bug inside the tool")


def _picky(x: str) -> str:
    raise ToolError("x must be positive")


SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
    "required": ["a", "b"],
}
X = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
TOOLS = {
    "add": Tool("add", "add two numbers", SCHEMA, _add),
    "broken": Tool("broken", "always fails", X, _broken),
    "picky": Tool("picky", "refuses", X, _picky),
}

PARSE_TABLE = [
    # (message, [ToolCall or error substring, ...])
    ("no call at all", []),
    (
        '<tool_call>{"name": "add", "arguments": {"a": "1", "b": "2"}}</tool_call>',
        [ToolCall("add", {"a": "1", "b": "2"})],
    ),
    # several calls in one message, with text and newlines around them (Qwen puts each on its own lines)
    (
        'x\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\ny <tool_call>{"name": "g"}</tool_call>',
        [ToolCall("f", {}), ToolCall("g", {})],
    ),
    # OpenAI wire format: arguments as a JSON string
    ('<tool_call>{"name": "f", "arguments": "{\\"k\\": 1}"}</tool_call>', [ToolCall("f", {"k": 1})]),
    ("<tool_call>{not json}</tool_call>", ["invalid JSON"]),
    ("<tool_call>[1, 2]</tool_call>", ["expected"]),
    ('<tool_call>{"arguments": {}}</tool_call>', ["'name'"]),
    ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', ["'arguments' must be a JSON object"]),
    ('<tool_call>{"name": "f", "arguments": "not json"}</tool_call>', ["'arguments' is not a JSON object"]),
    # an opened but never closed call (the turn was cut, or the model forgot the tag)
    ('<tool_call>{"name": "f", "arguments": {}}', ["missing </tool_call>"]),
    (
        '<tool_call>{"name": "f"}</tool_call> then <tool_call>{"name"',
        [ToolCall("f", {}), "missing </tool_call>"],
    ),
    # absurdly deep JSON: the decoder's recursion limit, not a crash
    ("<tool_call>" + "[" * 5000 + "]" * 5000 + "</tool_call>", ["invalid JSON"]),
    ("<tool_call>" + " " * 30_000 + "</tool_call>", ["longer than"]),
]


@pytest.mark.parametrize(("message", "expected"), PARSE_TABLE)
def test_parse_table(message, expected):
    parsed = parse_tool_calls(message)
    assert len(parsed) == len(expected)
    for got, want in zip(parsed, expected):
        if isinstance(want, ToolCall):
            assert got.call == want and got.error is None
        else:
            assert got.call is None and want in (got.error or "")


EXECUTE_TABLE = [
    # (message, ok, content substring, counted name)
    ('<tool_call>{"name": "add", "arguments": {"a": "2", "b": "3"}}</tool_call>', True, "5", "add"),
    (
        '<tool_call>{"name": "mul", "arguments": {}}</tool_call>',
        False,
        "unknown tool 'mul'; available: add",
        INVALID_TOOL,
    ),
    (
        '<tool_call>{"name": "add", "arguments": {"a": "2"}}</tool_call>',
        False,
        "missing argument(s): b",
        "add",
    ),
    (
        '<tool_call>{"name": "add", "arguments": {"a": "2", "b": "3", "c": "4"}}</tool_call>',
        False,
        "unknown argument",
        "add",
    ),
    (
        '<tool_call>{"name": "add", "arguments": {"a": 2, "b": "3"}}</tool_call>',
        False,
        "'a' must be a string",
        "add",
    ),
    (
        '<tool_call>{"name": "broken", "arguments": {"x": "1"}}</tool_call>',
        False,
        "RuntimeError: bug inside",
        "broken",
    ),
    (
        '<tool_call>{"name": "picky", "arguments": {"x": "1"}}</tool_call>',
        False,
        "Error: x must be positive",
        "picky",
    ),
    ("<tool_call>nope</tool_call>", False, "Error: malformed tool call", INVALID_TOOL),
]


@pytest.mark.parametrize(("message", "ok", "content", "name"), EXECUTE_TABLE)
def test_execute_table(message, ok, content, name):
    [parsed] = parse_tool_calls(message)
    result = execute(parsed, TOOLS)
    assert (result.ok, result.name) == (ok, name)
    assert content in result.content
    assert result.message() == {"role": "tool", "name": name, "content": result.content}


def test_schema_is_openai_function_format():
    assert TOOLS["add"].schema == {
        "type": "function",
        "function": {"name": "add", "description": "add two numbers", "parameters": SCHEMA},
    }


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('<>/{}[]":, tool_calnmeargus\\1')), max_size=120))
def test_arbitrary_text_never_raises(text):
    for parsed in parse_tool_calls(text):
        assert (parsed.call is None) != (parsed.error is None)
        assert isinstance(execute(parsed, TOOLS).content, str)
