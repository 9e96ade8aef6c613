"""TRL's tool API (`GRPOTrainer(tools=[fn], environment_factory=Cls)`) as one grpolab Environment.

TRL 1.16's contract, which a TRL script relies on:
- a tool is a plain function with type hints and a Google-style docstring; its schema is
  `transformers.utils.get_json_schema(fn)`, what `apply_chat_template(tools=...)` renders;
- `environment_factory` makes one object per rollout; its public methods are tools, `reset(**row)`
  receives the dataset row's columns and may return text that is appended to the user message, and
  an optional `get_reward()` scores the finished episode (a reward of weight 1 named after the class);
- a dict `{name: factory}` mixes environments: each row's `environment` column picks one, and its
  prompt shows that environment's tools only (plus the standalone `tools`); `environment` is not
  passed to `reset`;
- a tool that raises answers with its error and the episode goes on; a tool's result is sent back
  as `str(result)` in a `tool` message.

`TrlEnv` below is an ordinary `ToolEnv`, so rollouts, masks and metrics are the ones every grpolab
agent gets. Where it departs from TRL: TRL's default is unlimited tool rounds, grpolab's agent.max_turns
bounds them; a call gets at most agent.tool_timeout_s seconds; tools are checked, and every
environment built once, when the GRPOTrainer is constructed (TRL does the latter too), so a missing
type hint or docstring is one line before the model loads rather than an error mid-run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from grpolab.config.load import ConfigError
from grpolab.envs.env import _CALL_FORMAT, Message, ToolEnv
from grpolab.envs.tool_parsing import tool_call_parser
from grpolab.envs.tools import Tool

RESERVED = ("reset", "get_reward")  # environment methods that are not tools (TRL's rule)
ENV_COLUMN = "environment"  # the row column that picks an environment of a dict factory
# Keys grpolab adds to a row for its own environments (see RolloutSampler.agent_row): not columns.
_GRPOLAB_KEYS = ("system_prompt",)


@dataclass(frozen=True)
class FunctionTool(Tool):
    """A Tool whose schema is exactly what `get_json_schema` made of the function."""

    json_schema: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> dict[str, Any]:
        return self.json_schema


def _where(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn))))


@functools.lru_cache(maxsize=1024)
def _schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """get_json_schema of a function (unbound, so that a method's schema is made once per class)."""
    from transformers.utils import get_json_schema
    from transformers.utils.chat_template_utils import DocstringParsingException, TypeHintParsingException

    try:
        return get_json_schema(fn)
    except (TypeHintParsingException, DocstringParsingException) as err:
        reason = " ".join(str(err).split())
        raise ConfigError(
            f"tools: {_where(fn)} cannot be a tool: {reason} (a tool needs a type hint for every argument and a "
            "Google-style docstring that describes each under 'Args:')"
        ) from None


def function_tool(fn: Callable[..., Any]) -> FunctionTool:
    """A function (or bound method; sync or async) as a Tool; ConfigError naming it when its type
    hints or docstring cannot make a schema."""
    if not callable(fn):
        raise ConfigError(f"tools: expected functions, got {fn!r}")
    schema = _schema(getattr(fn, "__func__", fn))
    spec = schema["function"]
    run = _sync(fn)
    return FunctionTool(spec["name"], spec.get("description", ""), spec["parameters"], run, json_schema=schema)


def _sync(fn: Callable[..., Any]) -> Callable[..., str]:
    """The tool as `fn(**arguments) -> str`, sent back as str(result); an async tool runs on an event
    loop of its own (TRL shares one daemon loop; a tool here is one call at a time anyway)."""
    if inspect.iscoroutinefunction(fn):

        def run_async(**arguments: Any) -> str:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return str(asyncio.run(fn(**arguments)))
            # This thread already runs a loop (a notebook): the coroutine gets its own in a worker.
            with ThreadPoolExecutor(1) as pool:
                return str(pool.submit(asyncio.run, fn(**arguments)).result())

        return run_async

    def run(**arguments: Any) -> str:
        return str(fn(**arguments))

    return run


def environment_tools(instance: Any) -> list[FunctionTool]:
    """The public methods of an environment object, but reset/get_reward, as tools (TRL's rule)."""
    methods = inspect.getmembers(instance, predicate=inspect.ismethod)
    return [function_tool(m) for name, m in methods if name not in RESERVED and not name.startswith("_")]


_PROBE = {"type": "function", "function": {"name": "probe_tool_5b1e", "description": "", "parameters": {}}}


def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template shows `tools` at all (SmolLM2's, for one, ignores them)."""
    messages = [{"role": "user", "content": "x"}]
    try:
        with_tool = tokenizer.apply_chat_template(messages, tools=[_PROBE], tokenize=False)
        without = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that fails on tools cannot show them either
        return False
    return bool(with_tool != without)


def schema_instructions(schemas: Sequence[dict[str, Any]]) -> str:
    """System-prompt text for a template that does not render tools: each schema as JSON, and the
    Hermes call format that the default parser reads."""
    listing = "\n".join(json.dumps(schema.get("function", schema)) for schema in schemas)
    return (
        f"You can use these tools:\n{listing}\nTo call a tool, write {_CALL_FORMAT}. The result comes back in "
        "the next message. When you know the answer, reply without a tool call."
    )


def _reset_arguments(reset: Callable[..., Any], row: Mapping[str, Any], multi: bool) -> dict[str, Any]:
    """The row's columns for `reset(**columns)`; `environment` is a routing column in the dict case.
    A `reset` without **kwargs gets only the columns it names (TRL would pass them all and fail)."""
    skip = {*_GRPOLAB_KEYS, *([ENV_COLUMN] if multi else [])}
    columns = {k: v for k, v in row.items() if k not in skip}
    params = inspect.signature(reset).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return columns
    names = {p.name for p in params}
    return {k: v for k, v in columns.items() if k in names}


class TrlEnv(ToolEnv):
    """One episode of TRL-style tools: standalone `tools` plus, with factories, the methods of the
    environment object made for this episode (`user_environment`, what rewards get as `environments`).

    The tool list, hence the prompt's tools, is set per episode in `reset`: with a dict of factories
    it depends on the row. As in TRL, the chat template renders the tools (`apply_chat_template(tools=...)`);
    where it ignores them (TRL refuses such a template), the schemas and the call format go into the
    system prompt instead (`schema_instructions`).
    """

    def __init__(
        self,
        tools: Sequence[Callable[..., Any]] = (),
        factories: Mapping[str | None, Callable[[], Any]] | None = None,
        tool_timeout_s: float | None = None,
    ) -> None:
        self.standalone: list[Tool] = [function_tool(fn) for fn in tools]
        super().__init__(self.standalone, system_prompt="", tool_timeout_s=tool_timeout_s)
        self.factories = dict(factories or {})
        self.multi = None not in self.factories and bool(self.factories)
        self.user_environment: Any = None
        self.template_shows_tools = True

    def bind_tokenizer(self, tokenizer: Any) -> None:
        super().bind_tokenizer(tokenizer)
        self.template_shows_tools = renders_tools(tokenizer)

    def reset(self, row: dict[str, Any]) -> list[Message]:
        self.row = row
        observation = None
        tools = list(self.standalone)
        if self.factories:
            name = row.get(ENV_COLUMN) if self.multi else None
            if name not in self.factories:
                raise ValueError(
                    f"row has {ENV_COLUMN}={name!r}, not one of environment_factory's names: "
                    f"{', '.join(map(str, self.factories))}"
                )
            self.user_environment = self.factories[name]()
            tools += environment_tools(self.user_environment)
            reset = self.user_environment.reset
            observation = reset(**_reset_arguments(reset, row, self.multi))
        self._tools = {tool.name: tool for tool in tools}
        self.tools = [tool.schema for tool in tools]
        user = str(row.get("prompt") or row.get("question") or "")
        if observation is not None:
            user += str(observation)  # TRL appends reset()'s text to the user message as it is
        system = row.get("system_prompt") or ""
        if self.tools and not self.template_shows_tools:
            system = "\n\n".join(part for part in (system, schema_instructions(self.tools)) if part)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        self._parse = tool_call_parser(self._tokenizer, messages, self.tools)
        return messages


@dataclass
class TrlSetup:
    """What `GRPOTrainer(tools=..., environment_factory=...)` adds to a run."""

    env_factory: Callable[[], TrlEnv]
    reward_owners: list[type]  # the environment classes with get_reward() (rewards/environment.py scores them)
    names: list[str] | None  # the dict factory's names (rows must pick one); None: one environment

    def check_rows(self, rows: Sequence[Mapping[str, Any]], dataset: str) -> None:
        """Fail at construction when a row names no known environment (TRL fails mid-run)."""
        if self.names is None:
            return
        for index, row in enumerate(rows):
            if row.get(ENV_COLUMN) not in self.names:
                raise ConfigError(
                    f"{dataset} row {index}: {ENV_COLUMN}={row.get(ENV_COLUMN)!r} is not one of environment_factory's "
                    f"names: {', '.join(self.names)}"
                )


def _factories(environment_factory: Any) -> dict[str | None, Callable[[], Any]]:
    if environment_factory is None:
        return {}
    if isinstance(environment_factory, Mapping):
        if not environment_factory:
            raise ConfigError("environment_factory: the dict of environments is empty")
        for name, factory in environment_factory.items():
            if not isinstance(name, str) or not callable(factory):
                raise ConfigError(f"environment_factory: expected {{name: class}}, got {name!r}: {factory!r}")
        return dict(environment_factory)
    if not callable(environment_factory):
        raise ConfigError("environment_factory: pass the class (or a function that makes one), not an instance")
    return {None: environment_factory}


def build_trl_environment(
    tools: Sequence[Callable[..., Any]] | None, environment_factory: Any, tool_timeout_s: float | None
) -> TrlSetup:
    """Check the tools and build each environment once (as TRL does: its reset, its tools' schemas);
    every problem is a ConfigError of one line, raised before any model is loaded."""
    tools = list(tools or [])
    for fn in tools:
        function_tool(fn)
    factories = _factories(environment_factory)
    owners: list[type] = []  # one reward per class, even when two names map to it
    for name, factory in factories.items():
        where = "environment_factory" + (f"[{name!r}]" if name is not None else "")
        try:
            instance = factory()
        except Exception as err:
            raise ConfigError(f"{where}: making an environment failed: {type(err).__name__}: {err}") from err
        if not callable(getattr(instance, "reset", None)):
            raise ConfigError(f"{where}: {type(instance).__name__} has no reset() method (TRL's environments need one)")
        environment_tools(instance)
        if callable(getattr(instance, "get_reward", None)) and type(instance) not in owners:
            owners.append(type(instance))
    names = [str(n) for n in factories] if factories and None not in factories else None
    return TrlSetup(functools.partial(TrlEnv, tools, factories, tool_timeout_s), owners, names)
