"""Check a model directory before anything loads it, so a broken one fails with one line naming the
file: a directory without config.json (transformers would blame sentencepiece or tiktoken), a
truncated or garbage `*.safetensors` (a raw SafetensorError otherwise), a shard the index lists but
that is missing. Opening a safetensors file reads only its header, which is enough: the header's
offsets must cover the file exactly, so a truncated file is caught without reading the weights."""

from __future__ import annotations

import json
from pathlib import Path

from grpolab.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"


class ModelFilesError(UserError, ValueError):
    """A model, adapter or checkpoint directory whose files cannot be loaded; one line naming the file."""


def check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # SafetensorError, OSError: the message names the problem, we name the file
        raise ModelFilesError(f"{path}: truncated or not a safetensors file ({err})") from None


def check_model_dir(path: Path, *, adapter: bool | None = None, what: str = "model") -> None:
    """`path` holds a loadable model (config.json) or LoRA adapter (adapter_config.json).

    adapter: True = must be an adapter, False = must be a full model, None = either."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFilesError(f"{what}: {path} is not a directory")
    has_adapter = (path / ADAPTER_CONFIG).is_file()
    has_model = (path / "config.json").is_file()
    if adapter is True and not has_adapter:
        found = "full model weights" if has_model else "no adapter"
        raise ModelFilesError(f"{what}: {path} holds {found}, not a LoRA adapter ({ADAPTER_CONFIG} missing)")
    if adapter is False and not has_model:
        raise ModelFilesError(f"{what}: {path} has no config.json (not a transformers model directory)")
    if adapter is None and not (has_adapter or has_model):
        raise ModelFilesError(f"{what}: {path} has neither config.json nor {ADAPTER_CONFIG}")
    for config in (path / "config.json", path / ADAPTER_CONFIG):
        if config.is_file():
            try:
                json.loads(config.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                raise ModelFilesError(f"{config}: not valid JSON ({err})") from None
    for index in path.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise ModelFilesError(f"{index}: not a valid weight index ({err})") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise ModelFilesError(f"{index}: lists {missing[0]}, which is missing")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)
