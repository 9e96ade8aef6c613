"""The config loader as users call it: config/load.py with every foreign name bound in (the seeds'
Hydra and flat keys, compat/seeds.py; TRL's names in an unknown-key hint, compat/trl_translate.py)
and with .env and the environment variables (compat/env_vars.py) between the preset and the
command line:

    defaults < preset YAML (+ `+experiment=NAME` additions) < .env < environment < command line
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from grpolab.compat.env_vars import config_sources
from grpolab.compat.seeds import pop_aliases, translate_overrides
from grpolab.compat.trl_translate import unknown_key
from grpolab.config import load as native
from grpolab.config.schema import Config

FOREIGN = native.ForeignNames(translate_overrides, pop_aliases, functools.partial(unknown_key, flat_trl=False))


def load_config(
    preset: str | None = None,
    overrides: list[str] | None = None,
    *,
    env_file: str | Path | None = ".env",
    environ: dict[str, str] | None = None,
) -> Config:
    """Resolve a config from all sources; raises ConfigError with a one-line message."""
    items = [item for _, item in config_sources(overrides, env_file, environ)]
    return native.load_config(preset, items, FOREIGN)


def load_yaml(path: Path) -> dict[str, Any]:
    """A preset or the user's YAML file, its foreign keys translated."""
    return native.load_yaml(path, FOREIGN)


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> None:
    native.apply_overrides(tree, overrides, FOREIGN)
