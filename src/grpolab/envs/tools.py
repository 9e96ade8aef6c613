"""Tools for agent rollouts: Hermes/Qwen-style tool-call parsing, OpenAI-format schemas, safe dispatch.

A model calls a tool by writing, anywhere in its message (several calls allowed):

    <tool_call>{"name": "calculator", "arguments": {"expression": "12*34"}}</tool_call>

That is the format Qwen2.5/Qwen3 and Hermes chat templates teach when `apply_chat_template(tools=...)`
is given the schemas from `Tool.schema`. Everything that can go wrong with a call (malformed JSON, an
unknown tool, wrong arguments, the tool itself failing) becomes a `ToolResult` with ok=False whose
text goes back to the model as an observation: a bad call is something to learn from, never an
exception that ends the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grpolab.deadline import TIMED_OUT, call_with_deadline

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
# Non-greedy and DOTALL: a call body may span lines, and two calls in one message stay two calls.
_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)
# A call body longer than this is not parsed: json.loads on megabytes of model output wastes time
# and no legitimate call to our tools is that long.
MAX_CALL_CHARS = 20_000
# Per-tool counters key calls whose tool name is unusable under this name, so that model garbage
# cannot grow the metric namespace without bound.
INVALID_TOOL = "_invalid"


class ToolError(Exception):
    """A tool failure whose message is shown to the model (keep it short and actionable)."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParsedCall:
    """One `<tool_call>` block: either a usable `call` or the `error` that explains why it is not."""

    raw: str
    call: ToolCall | None = None
    error: str | None = None


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call. `name` is the tool's name, or INVALID_TOOL when none could be used."""

    name: str
    content: str
    ok: bool

    def message(self) -> dict[str, Any]:
        """The `tool`-role chat message that carries this result back to the model."""
        return {"role": "tool", "name": self.name, "content": self.content}


@dataclass(frozen=True)
class Tool:
    """A callable tool: `fn(**arguments) -> str`, raising ToolError for failures the model should see.

    parameters: a JSON-schema object ({"type": "object", "properties": {...}, "required": [...]}).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., str]

    @property
    def schema(self) -> dict[str, Any]:
        """OpenAI function format, as `tokenizer.apply_chat_template(tools=[...])` expects."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def text_tool(fn: Callable[[str], str], description: str, argument: str, hint: str) -> Tool:
    """A tool named after `fn` that takes one string `argument` (the calculator's expression, the
    python tool's code); `hint` is the argument's description the model reads."""
    properties = {argument: {"type": "string", "description": hint}}
    return Tool(fn.__name__, description, {"type": "object", "properties": properties, "required": [argument]}, fn)


def parse_tool_calls(text: str) -> list[ParsedCall]:
    """Every `<tool_call>...</tool_call>` block of `text`, in order; an unclosed block is an error.

    >>> [p.call for p in parse_tool_calls('x <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>')]
    [ToolCall(name='f', arguments={'a': 1})]
    >>> parse_tool_calls("<tool_call>{oops}</tool_call>")[0].error
    'malformed tool call: invalid JSON (Expecting property name enclosed in double quotes)'
    """
    parsed = [_parse_body(match.group(1)) for match in _CALL_RE.finditer(text)]
    # An opening tag after the last complete block means the model started a call it never closed.
    tail = text[text.rfind(TOOL_CALL_CLOSE) + len(TOOL_CALL_CLOSE) :] if parsed else text
    if TOOL_CALL_OPEN in tail:
        parsed.append(ParsedCall(raw=tail, error=f"malformed tool call: missing {TOOL_CALL_CLOSE}"))
    return parsed


def _parse_body(body: str) -> ParsedCall:
    if len(body) > MAX_CALL_CHARS:
        return ParsedCall(raw=body[:200], error=f"malformed tool call: longer than {MAX_CALL_CHARS} characters")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        return ParsedCall(raw=body, error=f"malformed tool call: invalid JSON ({err.msg})")
    except (ValueError, RecursionError):  # absurd nesting depth exhausts the decoder's recursion
        return ParsedCall(raw=body, error="malformed tool call: invalid JSON")
    return call_from_json(data, body)


def call_from_json(data: Any, raw: str) -> ParsedCall:
    """A decoded call object `{"name": ..., "arguments": {...}}` (arguments may be a JSON string, as
    the OpenAI wire format sends them) as a ParsedCall; anything else is a ParsedCall with an error."""
    body = raw
    if not isinstance(data, dict):
        return ParsedCall(raw=body, error='malformed tool call: expected {"name": ..., "arguments": {...}}')
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return ParsedCall(raw=body, error="malformed tool call: 'name' must be a non-empty string")
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):
        # The OpenAI wire format carries arguments as a JSON string; models imitate it.
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return ParsedCall(raw=body, error="malformed tool call: 'arguments' is not a JSON object")
    if not isinstance(arguments, dict):
        return ParsedCall(raw=body, error="malformed tool call: 'arguments' must be a JSON object")
    return ParsedCall(raw=body, call=ToolCall(name=name, arguments=arguments))


def _check_arguments(tool: Tool, arguments: dict[str, Any]) -> None:
    """Reject missing/unknown/wrong-typed arguments with a message that names them."""
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    missing = [key for key in tool.parameters.get("required", []) if key not in arguments]
    if missing:
        raise ToolError(f"{tool.name}: missing argument(s): {', '.join(missing)}")
    unknown = [key for key in arguments if key not in properties]
    if unknown:
        raise ToolError(f"{tool.name}: unknown argument(s): {', '.join(unknown)}; expected: {', '.join(properties)}")
    for key, value in arguments.items():
        if properties[key].get("type") == "string" and not isinstance(value, str):
            raise ToolError(f"{tool.name}: argument '{key}' must be a string")


def call_with_timeout(fn: Callable[..., Any], arguments: dict[str, Any], timeout_s: float | None, name: str) -> Any:
    """`fn(**arguments)`, given at most `timeout_s` seconds (None: no limit); ToolError when it runs over.
    A call that never returns keeps its daemon thread until the process exits (grpolab.deadline), but
    the episode goes on. A tool that must really be stopped belongs in a subprocess, as the python tool
    is (envs/python_tool.py)."""
    result = call_with_deadline(fn, arguments, timeout_s or 0.0, f"tool-{name}")
    if result is TIMED_OUT:
        raise ToolError(f"{name} timed out after {timeout_s:g} s")
    return result


def execute(parsed: ParsedCall, tools: dict[str, Tool], timeout_s: float | None = None) -> ToolResult:
    """Run one parsed call, for at most `timeout_s` seconds. Never raises: every failure (a timeout
    included) is a ToolResult(ok=False) for the model."""
    if parsed.call is None:
        return ToolResult(INVALID_TOOL, f"Error: {parsed.error}", ok=False)
    tool = tools.get(parsed.call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        # The unknown name is not used as a metric key (see INVALID_TOOL).
        return ToolResult(
            INVALID_TOOL, f"Error: unknown tool '{parsed.call.name[:100]}'; available: {available}", ok=False
        )
    try:
        _check_arguments(tool, parsed.call.arguments)
        return ToolResult(tool.name, call_with_timeout(tool.fn, parsed.call.arguments, timeout_s, tool.name), ok=True)
    except ToolError as err:
        return ToolResult(tool.name, f"Error: {err}", ok=False)
    except Exception as err:  # a bug in a user tool still must not kill a training run
        return ToolResult(tool.name, f"Error: {tool.name} failed: {type(err).__name__}: {err}", ok=False)
