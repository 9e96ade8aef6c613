"""Build a `Config` from a preset and overrides, lowest precedence first:

    defaults < preset YAML (+ `+experiment=NAME` additions) < overrides

(compat/load.py adds .env and the environment below the command line, and other tools' key names.)

Overrides are dotted (`grpo.beta=0.05`), values parsed as YAML (`[1, 5]`, `true`, `1e-5`).
`model=NAME` with a bare name loads the model group file `configs/model/NAME.yaml`, as users of
Hydra-style configs expect. Every error is a `ConfigError` with one line that names the field.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from grpolab.config.openr1 import OPENR1_PARAMS, openr1_reward
from grpolab.config.schema import Config
from grpolab.config.yaml_strict import read_yaml_file
from grpolab.errors import UserError

SECRET_MARKERS = ("key", "token", "secret", "password")


class ConfigError(UserError, ValueError):
    """A config problem, phrased as one line that names the field."""

    exit_code = 2  # a usage error, as argparse's own


def _unknown_key(key: str, fields: list[str], prefix: str = "") -> ConfigError:
    hint = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
    suggestion = f"; did you mean '{prefix}{hint[0]}'?" if hint else f"; valid: {', '.join(fields)}"
    return ConfigError(f"unknown config key '{prefix}{key}'{suggestion}")


@dataclass(frozen=True)
class ForeignNames:
    """How other tools' key names reach the config tree. config/ knows none of them: compat/load.py
    binds the real ones (compat/seeds.py, compat/trl_translate.py); NATIVE reads grpolab's names only."""

    overrides: Callable[[list[str]], list[str]]  # `key=value` items with foreign keys rewritten to ours
    yaml_keys: Callable[[dict[str, Any]], list[str]]  # pops a YAML tree's foreign keys, as `key=value` items
    unknown_key: Callable[[str], ConfigError]  # the error for an unknown top-level key


def unknown_top_key(key: str, target: str | None = None, names: Sequence[str] = (), where: str = "") -> ConfigError:
    """An unknown top-level key: the key of the same leaf name, else `target` (where a foreign name
    lands), else the nearest section or other known `names`, never a far one (`beta` is not `eval`)."""
    sections = Config.model_fields
    leaves = {f"{s}.{leaf}": leaf for s, f in sections.items() for leaf in getattr(f.annotation, "model_fields", {})}
    hint = [dotted for dotted, leaf in leaves.items() if leaf == key][:1]
    if not hint and target in leaves:
        hint = [str(target)]
    hint = hint or difflib.get_close_matches(key, [*sections, *names], n=1, cutoff=0.7)
    if not hint:
        close = difflib.get_close_matches(key, list(leaves.values()), n=1, cutoff=0.8)
        hint = [dotted for dotted, leaf in leaves.items() if close and leaf == close[0]][:1]
    if hint:
        return ConfigError(f"unknown config key '{key}'; did you mean '{hint[0]}'?")
    return ConfigError(f"unknown config key '{key}': not a section ({', '.join(sections)}){where}")


NATIVE = ForeignNames(list, lambda tree: [], unknown_top_key)


def configs_dir() -> Path:
    """The presets shipped inside the package (so a wheel install has them too)."""
    return Path(__file__).resolve().parents[1] / "configs"


def resolve_preset(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for candidate in (configs_dir() / f"{name_or_path}.yaml", configs_dir() / name_or_path):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
    hint = difflib.get_close_matches(path.stem, known, n=1)
    raise ConfigError(
        f"--config: no preset or file '{name_or_path}'"
        + (f"; did you mean '{hint[0]}'?" if hint else f"; presets: {', '.join(known)}")
    )


def load_yaml(path: Path, names: ForeignNames = NATIVE, _including: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset file with its `defaults:` includes merged in (an include cycle is an error)."""
    if path.resolve() in _including:
        chain = " -> ".join(p.name for p in (*_including, path.resolve()))
        raise ConfigError(f"{path}: preset includes itself ({chain})")
    data = read_yaml_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    includes = data.pop("defaults", [])
    merged: dict[str, Any] = {}
    for include in includes if isinstance(includes, list) else [includes]:
        deep_merge(merged, load_yaml(resolve_preset(str(include)), names, (*_including, path.resolve())))
    own_train = data.get("train")
    for key in own_train if isinstance(own_train, dict) else {}:
        drop_alternative(merged, f"train.{key}")
    deep_merge(merged, data)
    apply_overrides(merged, names.yaml_keys(merged), names)  # a Tunix or eval-config YAML, as its users wrote it
    return merged


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "rewards":
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if isinstance(child, list) and part == "rewards" and node is tree:  # the short form `rewards: [...]`
            child = node[part] = {"functions": child}  # so that rewards.timeout_s=... still applies
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def check_keys(
    tree: dict[str, Any], model: type[BaseModel] = Config, prefix: str = "", names: ForeignNames = NATIVE
) -> None:
    """Reject unknown keys with the nearest valid name, before pydantic sees the tree."""
    fields = model.model_fields
    for key, value in tree.items():
        if key not in fields:
            raise _unknown_key(key, list(fields), prefix) if prefix else names.unknown_key(key)
        annotation = fields[key].annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ == "RewardsConfig":
                continue
            check_keys(value, annotation, f"{prefix}{key}.")


# Two ways to say how long a run is. A layer (a preset over its includes, the command line over the
# preset) that sets one replaces the other from the layers below; one layer setting both is a conflict
# that the schema reports naming both fields.
ALTERNATIVES = {"train.epochs": "train.max_steps", "train.max_steps": "train.epochs"}


def drop_alternative(tree: dict[str, Any], dotted: str, set_here: set[str] | None = None) -> None:
    other = ALTERNATIVES.get(dotted)
    if other is None or (set_here is not None and other in set_here):
        return
    section, _, key = other.partition(".")
    node = tree.get(section)
    if isinstance(node, dict):
        node.pop(key, None)


def set_reward_param(tree: dict[str, Any], key: str, value: Any) -> None:
    """A top-level open-r1 parameter (`cosine_max_len=500`): set on every reward of its kind."""
    reward, param = OPENR1_PARAMS[key]
    section = tree.get("rewards")
    entries = section.get("functions") if isinstance(section, dict) else section
    entries = entries if isinstance(entries, list) else []
    matched = False
    for i, entry in enumerate(entries):
        entry = openr1_reward({"name": entry} if isinstance(entry, str) else entry)
        if isinstance(entry, dict) and entry.get("name") == reward:
            entries[i] = {**entry, param: value}
            matched = True
    if not matched:
        raise ConfigError(f"{key}: sets '{param}' of the {reward} reward, which is not in rewards; add it first")


def apply_overrides(tree: dict[str, Any], overrides: list[str], names: ForeignNames = NATIVE) -> None:
    set_here: set[str] = set()
    for item in names.overrides(overrides):
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key.startswith("+experiment") or key == "+experiment":
            deep_merge(tree, load_yaml(resolve_preset(text), names))
            continue
        key = key.lstrip("+")
        if key in OPENR1_PARAMS:  # open-r1's flat reward params: onto the rewards already configured
            set_reward_param(tree, key, parse_value(text))
            continue
        if key == "model":  # `model=NAME`: a model group file, else a model id or path
            group = configs_dir() / "model" / f"{text}.yaml"
            if group.is_file():
                deep_merge(tree.setdefault("model", {}), load_yaml(group, names))
            else:
                set_dotted(tree, "model.name", text)
            continue
        drop_alternative(tree, key, set_here)
        set_here.add(key)
        set_dotted(tree, key, parse_value(text))


def format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"config error: {loc}: {message}{shown}" if loc else f"config error: {message}"


def load_config(preset: str | None = None, overrides: list[str] | None = None, names: ForeignNames = NATIVE) -> Config:
    """Resolve a config from a preset and overrides; raises ConfigError with a one-line message.
    compat/load.py's `load_config` is this with .env, the environment and other tools' names."""
    tree: dict[str, Any] = {}
    if preset:
        deep_merge(tree, load_yaml(resolve_preset(preset), names))
    apply_overrides(tree, overrides or [], names)
    check_keys(tree, names=names)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str) and any(m in key.lower() for m in SECRET_MARKERS) and "env" not in key:
        return "***"
    return value


def redact_text(text: str, *secrets: str | None) -> str:
    """`text` with the given secrets, and the value of every environment variable whose name marks a
    secret (..._KEY, ..._TOKEN, ...), replaced by ***: for anything a remote server wrote (a judge's
    reply can echo the Authorization header) before it reaches a log line or an exception.
    Values shorter than 8 characters are left alone (they would blank out ordinary words)."""
    names = (name for name in os.environ if any(m in name.lower() for m in SECRET_MARKERS))
    values = {secret for secret in (*secrets, *(os.environ[n] for n in names)) if secret and len(secret) >= 8}
    for secret in sorted(values, key=len, reverse=True):  # longest first: a key containing another
        text = text.replace(secret, "***")
    return text


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, secrets redacted (API keys are read from the environment only)."""
    return yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False)
