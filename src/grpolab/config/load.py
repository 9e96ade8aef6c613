"""Build a `Config` from its sources, lowest precedence first:

    defaults < preset YAML (+ `+experiment=NAME` additions) < .env < environment < command line

Overrides are dotted (`grpo.beta=0.05`), values parsed as YAML (`[1, 5]`, `true`, `1e-5`).
`model=NAME` with a bare name loads the model group file `configs/model/NAME.yaml`, as users of
Hydra-style configs expect. Every error is a `ConfigError` with one line that names the field.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError

from grpolab.config.aliases import pop_aliases, set_reward_param, translate_overrides
from grpolab.config.openr1 import OPENR1_PARAMS
from grpolab.config.schema import Config
from grpolab.config.yaml_strict import read_yaml_file
from grpolab.errors import UserError

# Names users already know from the agent GRPO scripts they come from.
ENV_VARS: dict[str, str] = {
    "MODEL_NAME": "model.name",
    "TRAIN_DATASET_SIZE": "data.train_size",
    "EVAL_DATASET_SIZE": "eval.size",
    "PER_DEVICE_TRAIN_BATCH_SIZE": "train.questions_per_step",
    "NUM_GENERATIONS": "grpo.num_generations",
    "MAX_STEPS": "train.max_steps",
    "LEARNING_RATE": "optim.lr",
    "BETA": "grpo.beta",
    "MAX_TOKENS": "generation.max_new_tokens",
    "MAX_TURNS": "agent.max_turns",
    "PATIENCE": "train.patience",
    "OUTPUT_DIR": "train.output_dir",
    "SEED": "train.seed",
    "VERBOSE": "logging.verbose",
}
ENV_PREFIX = "GRPOLAB_"  # GRPOLAB_SEED=7 means SEED=7, and wins over it when both are set

SECRET_MARKERS = ("key", "token", "secret", "password")


class ConfigError(UserError, ValueError):
    """A config problem, phrased as one line that names the field."""

    exit_code = 2  # a usage error, as argparse's own


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


def load_yaml(path: Path, _including: tuple[Path, ...] = ()) -> dict[str, Any]:
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
        deep_merge(merged, load_yaml(resolve_preset(str(include)), (*_including, path.resolve())))
    own_train = data.get("train")
    for key in own_train if isinstance(own_train, dict) else {}:
        drop_alternative(merged, f"train.{key}")
    deep_merge(merged, data)
    apply_overrides(merged, pop_aliases(merged))  # a Tunix or eval-config YAML, as its users wrote it
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


def check_keys(tree: dict[str, Any], model: type[BaseModel] = Config, prefix: str = "") -> None:
    """Reject unknown keys with the nearest valid name, before pydantic sees the tree."""
    fields = model.model_fields
    for key, value in tree.items():
        if key not in fields and not prefix:
            from grpolab.compat.trl_translate import unknown_key  # it imports this module

            raise unknown_key(key, flat_trl=False)
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            where = f"{prefix}{key}"
            suggestion = f"; did you mean '{prefix}{hint[0]}'?" if hint else f"; valid: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{where}'{suggestion}")
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


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> None:
    set_here: set[str] = set()
    for item in translate_overrides(overrides):
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key.startswith("+experiment") or key == "+experiment":
            deep_merge(tree, load_yaml(resolve_preset(text)))
            continue
        key = key.lstrip("+")
        if key == "wandb_disabled":  # the switch Tunix users know
            set_dotted(tree, "logging.wandb", not bool(parse_value(text)))
            continue
        if key in OPENR1_PARAMS:  # open-r1's flat reward params: onto the rewards already configured
            set_reward_param(tree, key, parse_value(text))
            continue
        if key == "mode":  # `--mode masked|full` shortcut of agent users
            set_dotted(tree, "agent.mode", text)
            continue
        if key == "model":  # `model=NAME`: a model group file, else a model id or path
            group = configs_dir() / "model" / f"{text}.yaml"
            if group.is_file():
                deep_merge(tree.setdefault("model", {}), load_yaml(group))
            else:
                set_dotted(tree, "model.name", text)
            continue
        drop_alternative(tree, key, set_here)
        set_here.add(key)
        set_dotted(tree, key, parse_value(text))


def named_environment_overrides(environ: dict[str, str | None]) -> list[tuple[str, str]]:
    """(variable, override) for each known variable that is set; GRPOLAB_-prefixed names last."""
    names = [*ENV_VARS, *(ENV_PREFIX + name for name in ENV_VARS)]
    return [(name, f"{ENV_VARS[name.removeprefix(ENV_PREFIX)]}={environ[name]}") for name in names if environ.get(name)]


def environment_overrides(environ: dict[str, str | None]) -> list[str]:
    return [item for _, item in named_environment_overrides(environ)]


def config_sources(
    overrides: list[str] | None, env_file: str | Path | None, environ: dict[str, str] | None
) -> list[tuple[str, str]]:
    """(source, override) pairs above the preset, lowest precedence first: .env, environment, command line."""
    sources: list[tuple[str, str]] = []
    if env_file and Path(env_file).is_file():
        named = named_environment_overrides(read_env_file(Path(env_file)))
        sources += [(f".env {name}", item) for name, item in named]
    named = named_environment_overrides(dict(os.environ if environ is None else environ))
    sources += [(f"environment {name}", item) for name, item in named]
    return sources + [("command line", item) for item in overrides or []]


def format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"config error: {loc}: {message}{shown}" if loc else f"config error: {message}"


def load_config(
    preset: str | None = None,
    overrides: list[str] | None = None,
    *,
    env_file: str | Path | None = ".env",
    environ: dict[str, str] | None = None,
) -> Config:
    """Resolve a config from all sources; raises ConfigError with a one-line message."""
    tree: dict[str, Any] = {}
    if preset:
        deep_merge(tree, load_yaml(resolve_preset(preset)))
    apply_overrides(tree, [item for _, item in config_sources(overrides, env_file, environ)])
    check_keys(tree)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def read_env_file(path: Path) -> dict[str, str | None]:
    try:
        return dict(dotenv_values(path))
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from None


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
