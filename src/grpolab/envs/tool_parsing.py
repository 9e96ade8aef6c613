"""Finding the tool calls in a model's message: the tokenizer's own response parser when the model
ships one, Hermes `<tool_call>{json}</tool_call>` blocks otherwise.

transformers 5 tokenizers can carry a `response_template` (from the model's tokenizer_config) that
`tokenizer.parse_response(text, prefix=..., tools=...)` applies to turn generated text into a chat
message with `tool_calls` ({"type": "function", "function": {"name": ..., "arguments": {...}}}).
Models whose call format is not Hermes' (Gemma 4's `<|tool_call>call:NAME{...}<tool_call|>`, Qwen 3.5's
`<function=NAME><parameter=...>`) are read correctly that way; the template also casts argument
strings with the tool's JSON schema. A model without one (the tiny model, Qwen2.5, Hermes) gets the
Hermes parser, which is also what the built-in tool instructions teach.

When the model's parser rejects a message (a malformed call), the Hermes parser is tried, since
it names each bad call; if it finds no call either, the message counts as one malformed call, so
the model is told, rather than the episode silently ending as if it had answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpolab.envs.tools import ParsedCall, call_from_json, parse_tool_calls

ToolCallParser = Callable[[str], list[ParsedCall]]


def response_template(tokenizer: Any) -> dict[str, Any] | None:
    """The tokenizer's response template when it parses tool calls, else None."""
    template = getattr(tokenizer, "response_template", None)
    if not isinstance(template, dict) or not callable(getattr(tokenizer, "parse_response", None)):
        return None
    return template if "tool_calls" in template.get("fields", {}) else None


def tool_call_parser(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ToolCallParser:
    """The parser for an episode that started from `messages` with `tools` (OpenAI schemas).

    `messages` render the prompt (with the generation prompt) that `parse_response` needs as prefix:
    templates may pre-write part of the assistant turn (an opening <think>). Every later turn starts
    with the same generation prompt, so one prefix serves the whole episode.
    """
    if tokenizer is None or response_template(tokenizer) is None:
        return parse_tool_calls
    try:
        prefix = str(
            tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True, tokenize=False)
        )
    except Exception:  # a template that cannot render these messages: parse without the prompt context
        prefix = ""

    def parse(text: str) -> list[ParsedCall]:
        try:
            message = tokenizer.parse_response(text, prefix=prefix, tools=tools or None)
        except Exception as err:
            fallback = parse_tool_calls(text)
            if fallback:
                return fallback
            return [ParsedCall(raw=text[:200], error=f"malformed tool call: {type(err).__name__}: {err}"[:300])]
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        return [_from_entry(entry) for entry in calls or []]

    return parse


def _from_entry(entry: Any) -> ParsedCall:
    """One `tool_calls` entry of a parsed message: {"type": "function", "function": {name, arguments}}."""
    data = entry.get("function", entry) if isinstance(entry, dict) else entry
    return call_from_json(data, str(entry)[:200])
