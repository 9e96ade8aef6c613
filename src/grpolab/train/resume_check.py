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


# --- every file a resume reads, checked before the model loads (issue 22, items 4-5) ---------------

# torch.save writes a zip archive whose pickle is `<name>/data.pkl`; a garbage or truncated file has no
# readable central directory. Checking the archive (not unpickling it) keeps this torch-free and fast.
RESUME_TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pt")
# train.max_staleness=1: the groups already sampled for the next step (absent from synchronous runs)
PREFETCH_FILE = "prefetched_groups.pt"
# key -> the type its value must have in trainer_state.json (what RunState.load_state_dict reads)
_STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "step": int,
    "question_order": dict,
    "early_stopping": dict,
    "history": list,
    "before": dict,
    "epoch_sum": (int, float),
    "epoch_count": int,
}


def _check_torch_file(path: Path) -> None:
    import zipfile

    if not path.is_file():
        raise ModelFilesError(f"cannot resume: checkpoint {path.parent} is incomplete ({path.name} is missing)")
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                raise zipfile.BadZipFile("no data.pkl")
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelFilesError(f"cannot resume: {path} is truncated or not a torch file ({err})") from None


def _check_json_files(ckpt: Path) -> None:
    for path in sorted(ckpt.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ModelFilesError(f"cannot resume: {path} is not valid JSON ({err})") from None


def check_trainer_state(state: dict[str, Any], ckpt: Path, max_steps: int) -> None:
    """The state a resume continues from makes sense: the keys and types `RunState` reads, a step
    that matches the `step-N` directory and is within `train.max_steps`."""
    where = Path(ckpt) / TRAINER_STATE_FILE
    for key, kind in _STATE_TYPES.items():
        value = state.get(key, state.get("sampler") if key == "question_order" else None)  # the pre-rename name
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFilesError(f"cannot resume: {where}: '{key}' is {value!r}, not a valid value")
    step = state["step"]
    named = _STEP_RE.fullmatch(Path(ckpt).name)
    if step < 0 or (named and int(named.group(1)) != step):
        raise ModelFilesError(f"cannot resume: {where} says step {step}, but the checkpoint is {Path(ckpt).name}")
    if step > max_steps:
        raise ModelFilesError(
            f"cannot resume: {ckpt} is at step {step}, beyond train.max_steps={max_steps}; "
            f"set train.max_steps to at least {step}"
        )


def check_resume_files(ckpt: Path, max_steps: int) -> None:
    """Every file a resume reads is there and readable, and the trainer state is sane; one line naming
    the file otherwise. Runs before the model loads and before anything is written, so a damaged
    checkpoint leaves the run it belongs to untouched."""
    ckpt = Path(ckpt)
    check_checkpoint_dir(ckpt)  # trainer_state.json parses; the safetensors headers are whole
    _check_json_files(ckpt)
    if (ckpt / "adapter_config.json").is_file():
        weights = [ckpt / "adapter_model.safetensors"]
    elif (ckpt / "config.json").is_file():
        weights = sorted(ckpt.glob("model*.safetensors")) or [ckpt / "model.safetensors"]
    else:
        raise ModelFilesError(f"cannot resume: {ckpt} has no model (neither adapter_config.json nor config.json)")
    if not any((ckpt / name).is_file() for name in RESUME_TORCH_FILES):  # saved so on purpose (best/)
        raise ModelFilesError(
            f"cannot resume: {ckpt} holds weights only, no optimizer state (best/ never keeps it): resume from "
            "a checkpoints/step-N; `grpolab export` or `grpolab eval --model` read these weights"
        )
    optional = [ckpt / PREFETCH_FILE] if (ckpt / PREFETCH_FILE).is_file() else []
    for path in [*weights, *(ckpt / name for name in RESUME_TORCH_FILES), *optional]:
        if path.suffix == ".pt":
            _check_torch_file(path)
        elif not path.is_file():
            raise ModelFilesError(f"cannot resume: checkpoint {ckpt} is incomplete ({path.name} is missing)")
    state = json.loads((ckpt / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    check_trainer_state(state, ckpt, max_steps)


def auto_resume_point(output_dir: Path | str, run_name: str) -> Path | None:
    """`train.resume=auto`: the latest checkpoint of the newest run of `run_name` that has one."""
    for checkpoints in reversed(sorted((Path(output_dir) / run_name).glob("*/checkpoints"))):
        found = latest_checkpoint(checkpoints)
        if found is not None:
            return found
    return None


def nothing_to_resume(output_dir: Path | str, run_name: str) -> str:
    """The line for a bare `--resume` that finds no checkpoint: what was looked for, and which run
    names under the output folder could be resumed instead."""
    root = Path(output_dir)
    names = sorted({p.parents[2].relative_to(root).as_posix() for p in root.glob("*/*/checkpoints/step-*")})
    hint = f"; run names with checkpoints there: {', '.join(names)}" if names else ""
    return (
        f"--resume: no checkpoint of run '{run_name}' in {root / run_name}/*/checkpoints{hint}. Give the preset "
        "the run was started with (-c NAME), train.run_name=NAME, or --resume RUN_DIR; without --resume a "
        "fresh run starts"
    )
