"""Names users write in `rewards:` -> functions, and `build_rewards`, which turns the config into a
`RewardSet` and rejects every mistake it can see before a model is loaded.

Built-ins are a plain table of imports (no decorators, no plugins); user functions are named by
import path `pkg.module:function` and follow the same calling convention (see `api.py`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from grpolab.config.load import ConfigError
from grpolab.config.schema import RewardsConfig, RewardSpec
from grpolab.rewards import correctness, environment, format, judge, shaping
from grpolab.rewards.api import STANDARD_INPUTS, BoundReward, RewardSet


class Required:
    """Marks a param that has no default and must be set in the config."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED = Required()


@dataclass(frozen=True)
class RewardInfo:
    name: str
    fn: Callable[..., Any]
    description: str
    source: str
    params: dict[str, Any] = field(default_factory=dict)  # name -> default (REQUIRED when unset)
    check: Callable[[dict[str, Any]], None] | None = None  # build-time validation of param values
    required: tuple[str, ...] = ()  # params that default to None but must be set


def _check_repetition(params: dict[str, Any]) -> None:
    if params.get("max_penalty", -1.0) > 0:
        raise ValueError(f"max_penalty must be <= 0 (it is a penalty), got {params['max_penalty']}")
    if params.get("ngram_size", 3) < 1:
        raise ValueError(f"ngram_size must be >= 1, got {params['ngram_size']}")


def _check_cosine(params: dict[str, Any]) -> None:
    if params.get("max_len", 1000) <= 0:
        raise ValueError(f"max_len must be > 0, got {params['max_len']}")


def _check_tags(params: dict[str, Any]) -> None:
    for key in ("think_tag", "answer_tag"):
        if key in params and not format.is_valid_tag(params[key]):
            raise ValueError(f"{key} must be a bare tag name like 'think' or 'reasoning', got {params[key]!r}")


Check = Callable[[dict[str, Any]], None]

# name -> (function, source it matches, build-time check, required params)
_BUILTINS: dict[str, tuple[Callable[..., Any], str, Check | None, tuple[str, ...]]] = {
    "numeric": (correctness.numeric, "ours", None, ()),
    "accuracy": (correctness.accuracy, "open-r1", None, ()),
    "check_answer": (correctness.check_answer, "Tunix demo", None, ()),
    "check_numbers": (correctness.check_numbers, "Tunix demo", None, ()),
    "format": (format.format_reward, "open-r1", None, ()),
    "answer_format": (format.answer_format, "ours", None, ()),
    "tag_count": (format.tag_count, "open-r1", None, ()),
    "match_format_exactly": (format.match_format_exactly, "Tunix demo", None, ()),
    "match_format_approximately": (format.match_format_approximately, "Tunix demo", None, ()),
    "hard_format": (format.hard_format, "lenient-rewards setup", _check_tags, ()),
    "mark": (format.mark, "lenient-rewards setup", _check_tags, ()),
    "reasoning_steps": (shaping.reasoning_steps, "open-r1", None, ()),
    "cosine_scaled": (shaping.cosine_scaled, "open-r1 (Demystifying long CoT)", _check_cosine, ()),
    "repetition_penalty": (shaping.repetition_penalty, "open-r1", _check_repetition, ()),
    "length": (shaping.length, "Kimi 1.5 (open-r1 len_reward)", None, ()),
    "soft_overlong": (
        shaping.soft_overlong,
        "DAPO eq. 13 (TRL)",
        shaping.check_soft_overlong,
        ("max_completion_len", "cache"),
    ),
    "judge": (judge.judge, "ours (LLM judge)", judge.check_params, ("model",)),
    "env": (environment.env, "ours (the environment's final_reward)", None, ()),
}


def function_params(fn: Callable[..., Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Configurable params of a reward function: its keyword parameters that are not inputs."""
    out: dict[str, Any] = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in STANDARD_INPUTS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        if p.default is p.empty:
            continue  # no default: a dataset column (answer, question, ...), filled per batch
        out[name] = REQUIRED if name in required else p.default
    return out


def reward_registry() -> dict[str, RewardInfo]:
    """Every built-in reward by name, with its description, source and params (defaults)."""
    registry = {}
    for name, (fn, source, check, required) in _BUILTINS.items():
        doc = inspect.getdoc(fn) or ""
        description = " ".join(doc.split("\n\n")[0].split())
        registry[name] = RewardInfo(name, fn, description, source, function_params(fn, required), check, required)
    return registry


def _nearest(word: str, options: list[str]) -> str:
    hint = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f"; did you mean '{hint[0]}'?" if hint else f"; valid: {', '.join(options) or 'none'}"


def import_function(path: str) -> Callable[..., Any]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"rewards: fn '{path}' must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a user module may fail with anything at import time
        raise ConfigError(f"rewards: cannot import module '{module_name}' for fn '{path}' ({err!r})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
            raise ConfigError(f"rewards: module '{module_name}' has no '{attr}'{_nearest(attr, names)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"rewards: fn '{path}' is not callable")
    return typing.cast(Callable[..., Any], obj)


def _validate_params(
    label: str, fn: Callable[..., Any], params: dict[str, Any], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    signature = inspect.signature(fn)
    takes_all = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    valid = list(function_params(fn))
    for key in params:
        if key in STANDARD_INPUTS:
            raise ConfigError(f"reward '{label}': '{key}' is filled from the batch, not a param")
        if not takes_all and key not in signature.parameters:
            raise ConfigError(f"reward '{label}': unknown param '{key}'{_nearest(key, valid)}")
    missing = [k for k in required if params.get(k) is None]
    if missing:
        raise ConfigError(f"reward '{label}': param '{missing[0]}' is required (set {label}.{missing[0]}: ...)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations in a user module: skip type checks, not the reward
        hints = {}
    out = dict(params)
    for key, value in params.items():
        if key in hints:
            try:
                out[key] = TypeAdapter(hints[key]).validate_python(value)
            except ValidationError as err:
                message = err.errors()[0]["msg"]
                raise ConfigError(f"reward '{label}': param '{key}': {message} (got {value!r})") from None
    return out


def build_one(spec: RewardSpec) -> BoundReward:
    registry = reward_registry()
    check: Check | None = None
    required: tuple[str, ...] = ()
    if spec.name is not None:
        if spec.name not in registry:
            raise ConfigError(f"rewards: unknown reward '{spec.name}'{_nearest(spec.name, sorted(registry))}")
        info = registry[spec.name]
        fn, check, required = info.fn, info.check, info.required
    else:
        assert spec.fn is not None
        fn = import_function(spec.fn)
    params = _validate_params(spec.label, fn, spec.params, required)
    if check is not None:
        try:
            check(params)
        except ValueError as err:
            raise ConfigError(f"reward '{spec.label}': {err}") from None
    return BoundReward(spec.label, fn, spec.weight, params, reads_text=spec.name is not None)


def build_rewards(cfg: RewardsConfig) -> RewardSet:
    """Resolve and validate every configured reward (cheap: imports only, no model, no network)."""
    if not cfg.functions:
        raise ConfigError("rewards: at least one reward function is needed")
    bound = [build_one(spec) for spec in cfg.functions]
    labels = [b.label for b in bound]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise ConfigError(f"rewards: label '{dupes[0]}' is used twice; give one of them an 'alias'")
    return RewardSet(bound, on_error=cfg.on_error, timeout_s=cfg.timeout_s)
