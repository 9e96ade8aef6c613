"""Whether a run may continue a checkpoint, and which one (a new run's directory: train/run_lock.py).

A resume is checked before anything is written: `check_resume` reads the checkpoint's config and
refuses a run whose frozen keys changed, before the tracker touches the run directory, so a refused
resume leaves the old run byte-identical (status.json, config.yaml, report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from grpolab.config.load import config_to_yaml
from grpolab.config.schema import Config
from grpolab.errors import UserError
from grpolab.train.checkpoint import CONFIG_FILE, resolve_resume_path, resume_conflict
from grpolab.train.resume_check import auto_resume_point, check_resume_files

# Allowed to change; the change is reported when the run resumes.
NOTED_KEYS = ("optim.lr", "train.max_steps", "grpo.beta", "train.patience")


class ResumeError(UserError, ValueError):
    pass


def _dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def find_resume_point(cfg: Config) -> Path | None:
    if cfg.train.resume in (None, ""):
        return None
    if cfg.train.resume != "auto":
        return resolve_resume_path(Path(cfg.train.resume))  # a clear line for a path that is no checkpoint
    return auto_resume_point(cfg.train.output_dir, cfg.train.run_name)


def check_resume(cfg: Config, ckpt: Path) -> list[str]:
    """Raise ResumeError if `cfg` cannot continue `ckpt`; else the allowed changes, one line each."""
    saved_file = Path(ckpt) / CONFIG_FILE
    if not saved_file.is_file():
        raise ResumeError(f"cannot resume: {ckpt} is not a grpolab checkpoint (no {CONFIG_FILE})")
    check_resume_files(ckpt, cfg.train.max_steps)  # a damaged file: one line, before the model loads
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ResumeError(f"cannot resume: {saved_file} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(saved, dict):
        raise ResumeError(f"cannot resume: {saved_file} is not a config (a {type(saved).__name__}, not a mapping)")
    current = yaml.safe_load(config_to_yaml(cfg))
    conflict = resume_conflict(saved, current, ckpt)  # frozen keys: train/resume_check.py
    if conflict:
        raise ResumeError(conflict)
    return [
        f"resume: {key} changed {_dotted(saved, key)!r} -> {_dotted(current, key)!r}"
        for key in NOTED_KEYS
        if _dotted(saved, key) != _dotted(current, key)
    ]
