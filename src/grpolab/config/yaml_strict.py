"""Reading a user's YAML file strictly: a duplicate key is an error, not a silent last-wins, and a file
that is not UTF-8 names the line. PyYAML's SafeLoader keeps the last of two equal keys; a config with
`lr` written twice is almost always an edit that forgot the first one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A YAML file that cannot be read as a config; the message names the file (and line)."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise YamlFileError(f"duplicate key '{key}' at line {line} (first at line {seen[key]})")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, but duplicate mapping keys raise YamlFileError."""
    return yaml.load(text, Loader=_StrictLoader)


def read_yaml_file(path: Path) -> Any:
    """The parsed file (None for an empty one); every problem is a ConfigError naming the file."""
    from grpolab.config.load import ConfigError

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from None
    try:
        return parse_yaml(text)
    except YamlFileError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
