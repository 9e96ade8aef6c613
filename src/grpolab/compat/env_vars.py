"""Environment-variable names users already know from the agent GRPO scripts they come from
(`SEED=7 grpolab train`), and the sources above a preset in precedence order: .env < environment <
command line. The `GRPOLAB_`-prefixed name wins over the bare one when both are set."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values

from grpolab.config.load import ConfigError

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


def named_environment_overrides(environ: dict[str, str | None]) -> list[tuple[str, str]]:
    """(variable, override) for each known variable that is set; GRPOLAB_-prefixed names last."""
    names = [*ENV_VARS, *(ENV_PREFIX + name for name in ENV_VARS)]
    return [(name, f"{ENV_VARS[name.removeprefix(ENV_PREFIX)]}={environ[name]}") for name in names if environ.get(name)]


def read_env_file(path: Path) -> dict[str, str | None]:
    try:
        return dict(dotenv_values(path))
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from None


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
