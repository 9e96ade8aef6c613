"""Which checkpoint a resume means and whether it may be resumed: path checks and the compatibility
rule, without torch, so the command line answers a bad `--resume` in a second, before any import of
the training stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from grpolab.models.verify import ModelFilesError, check_safetensors
from grpolab.train.atomic import HIDDEN_RE

TRAINER_STATE_FILE = "trainer_state.json"
_STEP_RE = re.compile(r"step-(\d+)")


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """Complete `step-N` checkpoints, oldest first (hidden temp dirs and `best` are not listed)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_RE.fullmatch(path.name)
        if match and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint with the highest step (by number: step-10 is after step-9), or None."""
    found = list_checkpoints(checkpoints_dir)
    return found[-1][1] if found else None


def resolve_resume_path(path: Path) -> Path:
    """The checkpoint `--resume PATH` means: PATH itself, or a run directory's latest checkpoint; any
    other PATH (missing, a half-written `.tmp-step-*`, an override such as `key=value`) is one line."""
    path = Path(path)
    if not path.exists() and "=" in path.name:
        raise ModelFilesError(
            f"--resume: '{path}' is not a checkpoint path; to resume the latest checkpoint give --resume "
            "alone (overrides follow as usual), or --resume RUN_DIR/checkpoints/step-N"
        )
    if path.is_dir() and not (path / TRAINER_STATE_FILE).is_file():
        latest = latest_checkpoint(path / "checkpoints")
        if latest is not None:
            return latest
    check_checkpoint_dir(path)
    return path


def check_checkpoint_dir(ckpt_dir: Path) -> None:
    """A complete grpolab checkpoint: one line naming the problem otherwise (a run directory, a
    half-written `.tmp-step-*`, a truncated weights file)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.exists():
        raise ModelFilesError(f"checkpoint not found: {ckpt_dir}")
    if HIDDEN_RE.fullmatch(ckpt_dir.name):
        raise ModelFilesError(f"{ckpt_dir} is an unfinished save (a killed process's temp dir), not a checkpoint")
    if not (ckpt_dir / TRAINER_STATE_FILE).is_file():
        is_run = (ckpt_dir / "status.json").is_file() or (ckpt_dir / "checkpoints").is_dir()
        what = (
            "a run directory without checkpoints" if is_run else f"not a grpolab checkpoint (no {TRAINER_STATE_FILE})"
        )
        raise ModelFilesError(f"{ckpt_dir} is {what}")
    for weights in sorted(ckpt_dir.glob("*.safetensors")):
        check_safetensors(weights)
    for name in ("config.json", "adapter_config.json"):  # else from_pretrained fails, after the model load
        _check_json_object(ckpt_dir / name)
    try:
        state = json.loads((ckpt_dir / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFilesError(f"{ckpt_dir / TRAINER_STATE_FILE}: not valid JSON ({err})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ModelFilesError(f"{ckpt_dir / TRAINER_STATE_FILE}: not a trainer state (no 'step')")


def _check_json_object(path: Path) -> None:
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFilesError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFilesError(f"{path}: not a model config (a JSON {type(data).__name__}, not an object)")


# Changing one of these between a checkpoint and a resumed run makes the resumed run a different run:
# another model or parameter set, another question set or order (every data.* key: task, sizes, seed,
# file, columns, prompts), another group size, or another batch (the sampler's position counts batches
# of train.questions_per_step).
FROZEN_KEYS = (
    "model.name",
    "model.finetune",
    "grpo.num_generations",
    "train.seed",
    "train.questions_per_step",
)
FROZEN_SECTIONS = ("data",)


def _dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def resume_conflict(saved: dict[str, Any], current: dict[str, Any], ckpt: Path | str = "the checkpoint") -> str | None:
    """Why a run configured as `current` cannot resume a checkpoint saved with `saved` (both the config
    as plain dicts, e.g. `yaml.safe_load` of config.yaml), as one line; None when it can."""
    keys = list(FROZEN_KEYS)
    for section in FROZEN_SECTIONS:
        names = set(saved.get(section) or {}) | set(current.get(section) or {})
        keys += [f"{section}.{name}" for name in sorted(names)]
    for key in keys:
        before, now = _dotted(saved, key), _dotted(current, key)
        if before != now:
            return f"cannot resume: {key} was {before!r} in {ckpt}, now {now!r}"
    return None
