"""Environments: what an agent talks to between its turns. A plain class, no registry.

An environment holds one episode (one trajectory; the rollout loop makes one instance per
trajectory through a factory):

    env = factory()
    messages = env.reset(row)                      # [system, user]: the question and tool instructions
    result = env.step(assistant_message_text)      # tool-role observations, done?, per-step info
    env.final_reward()                             # optional reward of the whole episode, or None
    env.bind_tokenizer(tokenizer)                  # optional; called before reset (see ToolEnv)

`tools` holds the OpenAI-format schemas that the rollout passes to `apply_chat_template(tools=...)`.
Write your own by subclassing `Environment` (or any class with these methods) and point
`agent.env` at it as "pkg.module:Class"; `agent.env_params` become its keyword arguments.

`final_reward()` reaches the rewards as the `env` reward (`rewards: [{name: env, weight: 1.0}]`):
an environment that knows whether the episode succeeded (a test suite passed, a game was won) says
so there, and the config weighs it against the other rewards.

The built-in tool environments end an episode when the assistant writes a message without a tool
call: that message is the answer. `StepResult.info` counts this step's tool calls and failures,
per tool; the rollout loop sums them over the episode.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from grpolab.envs.calculator import CalculatorLimits, calculator_tool
from grpolab.envs.python_tool import PythonLimits, python_tool
from grpolab.envs.tool_parsing import ToolCallParser, tool_call_parser
from grpolab.envs.tools import INVALID_TOOL, Tool, ToolResult, execute, parse_tool_calls

Message = dict[str, Any]


@dataclass
class StepResult:
    observations: list[Message]  # tool-role messages, in call order
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class Environment(Protocol):
    """The interface (subclassing is optional: the rollout only calls these names)."""

    tools: list[dict[str, Any]] = []  # noqa: RUF012  (read-only default: no tools)

    def reset(self, row: dict[str, Any]) -> list[Message]:
        """Start an episode for a dataset row; return the initial chat messages."""
        ...

    def step(self, assistant_message: str) -> StepResult:
        """React to the model's message (its decoded text, without the end-of-turn token)."""
        ...

    def final_reward(self) -> float | None:
        """A reward the environment itself assigns to the finished episode; None = no opinion."""
        return None


EnvFactory = Callable[[], Environment]

_CALL_FORMAT = '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>'


def tool_instructions(tools: list[Tool]) -> str:
    """System-prompt text that teaches the call format, for templates that do not render `tools`."""
    listing = "\n".join(f"- {tool.name}: {tool.description}" for tool in tools)
    return (
        f"You can use these tools:\n{listing}\n"
        f"To call a tool, write {_CALL_FORMAT}. The result comes back in the next message. "
        "When you know the answer, reply without a tool call."
    )


class ToolEnv(Environment):
    """Question in, tool calls answered, episode over at the first message without a tool call.

    Row keys: "question" (required); "prompt" (an already formatted user message, used instead of
    the question); "system_prompt" (the task's instructions, e.g. the answer format), placed before
    the tool instructions.

    system_prompt: None = `tool_instructions(tools)`; "" = no tool instructions (for templates that
        explain the tools themselves).
    max_calls_per_turn: calls beyond this in one message are answered with an error, not run.
    tool_timeout_s: seconds one call may run (None: no limit); a call that runs longer is answered
        with a "timed out" error and counted as a failure (see tools.call_with_timeout).

    Tool calls are found by the tokenizer's own response parser when the rollout binds a tokenizer
    that has one, by the Hermes `<tool_call>` parser otherwise (see tool_parsing.py).
    """

    def __init__(
        self,
        tools: list[Tool],
        system_prompt: str | None = None,
        max_calls_per_turn: int = 4,
        tool_timeout_s: float | None = None,
    ):
        if max_calls_per_turn < 1:
            raise ValueError("max_calls_per_turn must be >= 1")
        if tool_timeout_s is not None and tool_timeout_s <= 0:
            raise ValueError("tool_timeout_s must be > 0 (or None for no limit)")
        self.tool_timeout_s = tool_timeout_s
        self._tools = {tool.name: tool for tool in tools}
        self.tools = [tool.schema for tool in tools]
        self.instructions = tool_instructions(tools) if system_prompt is None else system_prompt
        self.max_calls_per_turn = max_calls_per_turn
        self.row: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._parse: ToolCallParser = parse_tool_calls

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """The policy's tokenizer: its response parser (if any) reads the tool calls."""
        self._tokenizer = tokenizer

    def reset(self, row: dict[str, Any]) -> list[Message]:
        self.row = row
        system = "\n\n".join(part for part in (row.get("system_prompt"), self.instructions) if part)
        user = row.get("prompt") or row["question"]
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        self._parse = tool_call_parser(self._tokenizer, messages, self.tools)
        return messages

    def step(self, assistant_message: str) -> StepResult:
        parsed = self._parse(assistant_message)
        if not parsed:
            return StepResult([], done=True, info=_counts([]))
        results = [execute(call, self._tools, self.tool_timeout_s) for call in parsed[: self.max_calls_per_turn]]
        results += [
            ToolResult(INVALID_TOOL, f"Error: at most {self.max_calls_per_turn} tool calls per message", ok=False)
            for _ in parsed[self.max_calls_per_turn :]
        ]
        return StepResult([result.message() for result in results], done=False, info=_counts(results))


def _counts(results: list[ToolResult]) -> dict[str, Any]:
    per_tool: dict[str, dict[str, int]] = {}
    for result in results:
        entry = per_tool.setdefault(result.name, {"calls": 0, "failures": 0})
        entry["calls"] += 1
        entry["failures"] += int(not result.ok)
    return {
        "tool_calls": len(results),
        "tool_failures": sum(not result.ok for result in results),
        "per_tool": per_tool,
    }


class CalculatorEnv(ToolEnv):
    """One tool, `calculator(expression)`: safe arithmetic (see envs/calculator.py)."""

    def __init__(
        self,
        system_prompt: str | None = None,
        max_calls_per_turn: int = 4,
        max_digits: int = CalculatorLimits.max_digits,
        max_exponent: int = CalculatorLimits.max_exponent,
    ):
        limits = CalculatorLimits(max_digits=max_digits, max_exponent=max_exponent)
        super().__init__([calculator_tool(limits)], system_prompt, max_calls_per_turn)


class PythonEnv(ToolEnv):
    """One tool, `python(code)`: an isolated, resource-limited subprocess (envs/python_tool.py: what is guaranteed)."""

    def __init__(
        self,
        system_prompt: str | None = None,
        max_calls_per_turn: int = 2,
        timeout_s: float = PythonLimits.timeout_s,
        cpu_s: float = PythonLimits.cpu_s,
        memory_mb: int = PythonLimits.memory_mb,
        max_output_chars: int = PythonLimits.max_output_chars,
    ):
        limits = PythonLimits(timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, max_output_chars=max_output_chars)
        super().__init__([python_tool(limits)], system_prompt, max_calls_per_turn)


BUILTIN_ENVS: dict[str, type[Environment]] = {"calculator": CalculatorEnv, "python": PythonEnv}


def load_env(name_or_path: str, params: dict[str, Any] | None = None) -> EnvFactory:
    """A zero-argument factory of environments: a built-in name or "pkg.module:Class".

    The parameters are checked against the class's signature here, so a typo in `agent.env_params`
    fails when the config loads, not after the model has been loaded.

    >>> load_env("calculator", {"max_calls_per_turn": 2})().tools[0]["function"]["name"]
    'calculator'
    """
    params = dict(params or {})
    cls: Any
    if ":" in name_or_path:
        module_name, _, attr = name_or_path.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"agent.env: cannot import {name_or_path!r}: {err}") from err
    elif name_or_path in BUILTIN_ENVS:
        cls = BUILTIN_ENVS[name_or_path]
    else:
        close = difflib.get_close_matches(name_or_path, list(BUILTIN_ENVS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"agent.env: unknown environment {name_or_path!r}{hint}; built-ins: {', '.join(BUILTIN_ENVS)}, "
            "or an import path 'pkg.module:Class'"
        )
    if not callable(cls):
        raise ValueError(f"agent.env: {name_or_path!r} is not a class or factory")
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as err:
        raise ValueError(f"agent.env_params for {name_or_path!r}: {err}") from err
    except ValueError:
        pass  # a builtin or C callable without a signature: let the first call report problems
    return functools.partial(cls, **params)
