"""Where each value of a resolved config came from: `grpolab train --print-config`, and the one line
at the start of a run that names the environment variables that changed it.

    explain_config("arithmetic", ["model.name=tiny"], environ={"SEED": "7"})
    -> {"model.name": "command line: model.name=tiny", "train.seed": "environment SEED=7",
        "grpo.beta": "preset arithmetic", "train.max_steps": "derived from other fields", ...}

Only values that differ from the schema's defaults are explained. The sources are replayed one by one
through the same `apply_overrides` that built the config, so an alias (`optimizer.learning_rate`) or an
addition (`+experiment=quick_test`) is charged to the keys it really set. A value no source set as it
ended up (train.max_steps from train.epochs, data.val_size from eval.size) is "derived".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from grpolab.compat.env_vars import config_sources
from grpolab.compat.load import apply_overrides, load_config, load_yaml
from grpolab.config.load import ConfigError, redact, resolve_preset
from grpolab.config.schema import Config

DERIVED = "derived from other fields"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and empty dicts are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(a: Any, b: Any) -> bool:
    if a == b or str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _covering(keys: dict[str, Any], final_key: str) -> tuple[bool, Any]:
    """Whether a layer's keys set `final_key` (itself, a parent like `rewards`, or a child), and the value."""
    if final_key in keys:
        return True, keys[final_key]
    for key in keys:
        if final_key.startswith(key + ".") or key.startswith(final_key + "."):
            return True, None  # a whole section or list: no single value to compare
    return False, None


def explain_config(
    preset: str | None,
    overrides: list[str] | None = None,
    *,
    env_file: str | Path | None = ".env",
    environ: dict[str, str] | None = None,
) -> tuple[Config, dict[str, str]]:
    """The resolved config and, for every leaf not at its default, the source that set it."""
    cfg = load_config(preset, overrides, env_file=env_file, environ=environ)
    environ = dict(os.environ) if environ is None else environ
    dotenv = dict(dotenv_values(env_file)) if env_file and Path(env_file).is_file() else {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if preset:
        layers.append((f"preset {preset}", flatten(load_yaml(resolve_preset(preset)))))
    for source, item in config_sources(overrides, env_file, environ):
        tree: dict[str, Any] = {}
        try:
            apply_overrides(tree, [item])
        except ConfigError:  # one that acts on the layers below (cosine_max_len=500 sets a reward's param)
            tree = {}
        label = f"{source}: {item}" if source == "command line" else f"{source}={item.split('=', 1)[1]}"
        if source.startswith("environment "):
            name = source.split(" ", 1)[1]
            if dotenv.get(name) == environ.get(name):  # `grpolab` loads .env into the environment too
                label = label.replace("environment", ".env", 1)
        layers.append((label, flatten(tree)))
    defaults = flatten(Config().model_dump(mode="json"))
    explained: dict[str, str] = {}
    for key, value in flatten(cfg.model_dump(mode="json")).items():
        if key in defaults and _same(defaults[key], value):
            continue
        source = DERIVED
        for label, keys in reversed(layers):
            hit, set_value = _covering(keys, key)
            if hit:
                source = label if set_value is None or _same(set_value, value) else DERIVED
                break
        explained[key] = source
    return cfg, explained


def environment_changes(explained: dict[str, str]) -> list[str]:
    """`SEED=7 (train.seed)` for each value an environment variable or the .env file set."""
    return [
        f"{label.split(' ', 1)[1]} ({key})"
        for key, label in explained.items()
        if label.startswith("environment ") or label.startswith(".env ")
    ]


def _compact(value: Any) -> Any:
    """Reward specs without their empty fields (alias: null, params: {}), so a line stays readable."""
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v not in (None, {}, [])}
    return value


def _flow(value: Any) -> str:
    value = _compact(value) if isinstance(value, list) else value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def format_config(cfg: Config, explained: dict[str, str]) -> str:
    """The config as YAML (secrets redacted), each value not at its default followed by `# <- source`."""
    lines = ["# resolved config; '# <-' says where a value not at its default came from"]
    for section, fields in redact(cfg.model_dump(mode="json")).items():
        lines.append(f"{section}:")
        for key, value in fields.items():
            text = f"  {key}: {_flow(value)}"
            sources = sorted(
                {src for k, src in explained.items() if k == f"{section}.{key}" or k.startswith(f"{section}.{key}.")}
            )
            lines.append(f"{text:<48} # <- {'; '.join(sources)}" if sources else text)
    return "\n".join(lines) + "\n"
