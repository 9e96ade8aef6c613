"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

Layout of `<run>/checkpoints/`:
    step-N/   adapter (adapter_config.json + adapter_model.safetensors) or full weights
              (config.json + model*.safetensors), optimizer.pt, scheduler.pt, rng_state.pt,
              trainer_state.json (step, sampler position, early stopping, metric history), config.yaml,
              tokenizer files when given
    best/     the best step's weights when an evaluation improves (same layout, without the optimizer,
              scheduler and RNG files: it is loaded for its weights at the end, never resumed)
    .tmp-*    a save in progress (or one killed mid-way); never read, cleaned by `prune_checkpoints`

Why it is safe to kill at any moment: a checkpoint is written into a hidden sibling directory, its
files and the directory are fsynced, and only then is it renamed into place. A rename within one
directory is atomic on POSIX, so `step-N/` either does not exist or is complete. Replacing an
existing directory needs two renames (the old one away, the new one in); a crash between them leaves
`.old-NAME-PID`, which `prune_checkpoints` renames back.

The checkpoint's model files sit at its top level, so `AutoPeftModelForCausalLM.from_pretrained(ckpt)`
(adapter) or `AutoModelForCausalLM.from_pretrained(ckpt)` (full) load it directly.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grpolab.models.verify import ModelFilesError
from grpolab.parallel.sharding import Shards, unsharded_class
from grpolab.train.atomic import DiskFullError, atomic_dir, clean_stale, remove_dir
from grpolab.train.resume_check import (
    FROZEN_KEYS,
    PREFETCH_FILE,
    TRAINER_STATE_FILE,
    check_checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    resolve_resume_path,
    resume_conflict,
)

# re-exported: atomic writes live in atomic.py; what may be resumed (torch-free) in resume_check.py
__all__ = [
    "FROZEN_KEYS",
    "DiskFullError",
    "atomic_dir",
    "check_checkpoint_dir",
    "clean_stale",
    "latest_checkpoint",
    "list_checkpoints",
    "resolve_resume_path",
    "resume_conflict",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pt"
CONFIG_FILE = "config.yaml"
BEST = "best"
# Files that only matter for resuming; an exported model leaves them out.
TRAINING_FILES = frozenset({OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE, TRAINER_STATE_FILE})


def step_dir(checkpoints_dir: Path, step: int) -> Path:
    return Path(checkpoints_dir) / f"step-{step}"


# --- RNG ------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (if present) CUDA generators, in a form `torch.load(weights_only=True)`
    accepts: numpy's state array becomes a list, so no pickled numpy objects are needed to resume."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": np.asarray(keys).tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np.asarray(np_state["keys"], dtype=np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A resume on fewer GPUs restores the ones that exist.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


# --- save / load ----------------------------------------------------------------------------------


def _is_peft_model(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_checkpoint(
    ckpt_dir: Path,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    trainer_state: dict[str, Any],
    config_yaml: str,
    is_peft: bool,
    tokenizer: Any | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    training_state: bool = True,
    prefetched: Any | None = None,
) -> Path:
    """Write a complete checkpoint to `ckpt_dir` atomically (replacing one that exists) and return it.

    is_peft: save only the LoRA adapter (the base weights are the base model's); else the full weights.
    trainer_state must be JSON-able. Call on the main process only, with the unwrapped model.
    model_state / optimizer_state: the full (gathered) states of a sharded model, written in place of
    the model's and optimizer's own (see sharding.ShardedModel), so the files do not depend on FSDP.
    training_state=False: no optimizer, scheduler or RNG files (weights, config and trainer state
    only): for `best/`, which is loaded for its weights and never resumed from; Adam's state is
    twice the size of the weights it trains.
    prefetched: the groups already sampled for the next step (train.max_staleness=1), kept so that the
    resumed run trains on them as the uninterrupted one does.
    """
    ckpt_dir = Path(ckpt_dir)
    if is_peft != _is_peft_model(model):
        kind = "a peft model" if _is_peft_model(model) else "a plain transformers model"
        raise ValueError(f"save_checkpoint(is_peft={is_peft}) got {kind}")
    # Serialise first: a state that is not JSON-able fails before anything touches the disk.
    state_json = json.dumps(trainer_state, indent=2)
    with atomic_dir(ckpt_dir) as tmp:
        # PeftModel.save_pretrained writes the adapter only; a PreTrainedModel its full weights.
        # Both write safetensors (the default in transformers 5 and peft).
        model.save_pretrained(str(tmp), state_dict=model_state)  # None: the model's own
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if training_state:
            state = optimizer_state if optimizer_state is not None else optimizer.state_dict()
            torch.save(state, tmp / OPTIMIZER_FILE)
            if scheduler is not None:
                torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
            torch.save(capture_rng_state(), tmp / RNG_FILE)
            if prefetched is not None:
                torch.save(prefetched, tmp / PREFETCH_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        (tmp / TRAINER_STATE_FILE).write_text(state_json, encoding="utf-8")
    return ckpt_dir


def _load_adapter(ckpt_dir: Path, model: Any, shards: Shards) -> None:
    """peft saves adapter keys without the adapter's name (lora_A.weight for lora_A.<adapter>.weight);
    put it back by matching the model's own keys, then load non-strictly (the base weights are absent
    by design); under FSDP each rank keeps its shard."""
    from safetensors.torch import load_file

    weights = load_file(ckpt_dir / ADAPTER_WEIGHTS, device="cpu")
    marker = f".{getattr(model, 'active_adapter', 'default')}."
    by_saved_name = {key.replace(marker, "."): key for key in model.state_dict() if marker in key}
    unexpected = [k for k in weights if k not in by_saved_name]
    missing = [k for k, v in by_saved_name.items() if "lora_" in v and k not in weights]
    # a LoRA weight that is missing or a key that matches nothing means a different adapter layout
    if unexpected or missing:
        raise ValueError(
            f"adapter in {ckpt_dir} does not fit the model: unexpected {unexpected[:5]}, "
            f"missing {missing[:5]} (different lora_rank or target modules?)"
        )
    shards.load_full_state_dict({by_saved_name[k]: v for k, v in weights.items()}, strict=False)


def _load_full(ckpt_dir: Path, model: Any, shards: Shards) -> None:
    # from_pretrained handles shards, tied weights and checkpoint key conventions; the fresh copy is
    # built on CPU and copied into the existing model object (whose parameters the optimizer holds).
    dtype = next(model.parameters()).dtype
    fresh = unsharded_class(model).from_pretrained(str(ckpt_dir), dtype=dtype)
    shards.load_full_state_dict(fresh.state_dict(), strict=True)
    del fresh


def load_checkpoint(
    ckpt_dir: Path,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    shards: Shards,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore weights (in place), optimizer, scheduler and RNG from `ckpt_dir`; return trainer_state.

    optimizer/scheduler None: not restored. restore_rng=False: weights only (loading the best model at
    the end of a run should not rewind the random streams). shards: the model's sharding (`Unsharded(model)`
    when it is not sharded); under FSDP every rank calls this and keeps its shard of the full tensors read from disk."""
    ckpt_dir = Path(ckpt_dir)
    check_checkpoint_dir(ckpt_dir)  # one line for a truncated file, a temp dir, a run dir
    has_adapter = (ckpt_dir / ADAPTER_CONFIG).is_file()
    if has_adapter != _is_peft_model(model):
        saved = "a LoRA adapter" if has_adapter else "full weights"
        raise ValueError(
            f"{ckpt_dir} holds {saved}, but the model is "
            f"{'a peft model' if _is_peft_model(model) else 'a plain model'} (model.finetune changed?)"
        )
    if has_adapter:
        _load_adapter(ckpt_dir, model, shards)
    else:
        _load_full(ckpt_dir, model, shards)
    weights_only = not any((ckpt_dir / name).is_file() for name in (OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE))
    if optimizer is not None and weights_only:
        raise ModelFilesError(
            f"{ckpt_dir} holds weights only, no optimizer state (best/ never keeps it): resume from a "
            "checkpoints/step-N; `grpolab export` or `grpolab eval --model` read these weights"
        )
    if optimizer is not None:
        # map_location cpu: Optimizer.load_state_dict moves each state tensor to its parameter's device.
        saved = _torch_load(ckpt_dir / OPTIMIZER_FILE, map_location="cpu")
        try:
            shards.load_full_optimizer_state(optimizer, saved)
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # parameter groups changed, or not
            # an optimizer's state at all (a torch file of something else)
            raise ModelFilesError(f"{ckpt_dir}: optimizer state does not fit this model's optimizer ({err})") from None
    if scheduler is not None:
        scheduler.load_state_dict(_torch_load(ckpt_dir / SCHEDULER_FILE))
    state: dict[str, Any] = json.loads((ckpt_dir / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    # Last, on purpose: the resumed run must continue from the state captured at save time, even if
    # loading drew random numbers (a model class whose from_pretrained initialises weights).
    if restore_rng:
        restore_rng_state(_torch_load(ckpt_dir / RNG_FILE))
    return state


def load_prefetched(ckpt_dir: Path) -> Any | None:
    """The groups a checkpoint saved for its next step, or None (a synchronous run's checkpoint).
    Rollouts, examples and reward scores are Python objects, so this file is unpickled (the only one of
    a checkpoint that is): resume only from checkpoints your own runs wrote."""
    path = Path(ckpt_dir) / PREFETCH_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def _torch_load(path: Path, map_location: str | None = None) -> Any:
    if not path.is_file():
        raise ModelFilesError(f"checkpoint {path.parent} is incomplete: {path.name} is missing")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # garbage bytes, or a pickle of more than tensors (torch's paragraph)
        raise ModelFilesError(
            f"{path}: not a torch file of tensors (unreadable by torch.load(weights_only=True))"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFilesError(f"{path}: truncated or not a torch file ({first})") from None


# --- what is kept ---------------------------------------------------------------------------------

END_CHECKPOINT_LIMIT = 512 * 2**20  # bytes of optimizer state above which train.end_checkpoint=auto keeps none


def keeps_end(choice: str, model: Any, say: Callable[[str], None]) -> bool:
    """Whether to write checkpoints/step-N at the end of the run (train.end_checkpoint); `say` gets
    the line that explains a no.

    The optimizer state is what makes a checkpoint resumable and large: Adam keeps two moments per
    trained weight. A LoRA adapter's is megabytes; full fine-tuning of SmolLM2-135M in float32 makes
    it 1 GiB (the step-N folder 1.6 GB beside final/'s 0.5 GB), so `auto` keeps it only under
    END_CHECKPOINT_LIMIT, as TRL and Unsloth users expect: the model at the end, checkpoints when asked
    (train.save_every). final/ holds the model either way."""
    size = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    if choice == "resumable" or (choice == "auto" and size <= END_CHECKPOINT_LIMIT):
        return True
    why = f"its optimizer state would take {size / 2**30:.1f} GiB, " if choice == "auto" else ""
    say(
        f"no end-of-run checkpoint ({why}train.end_checkpoint={choice}): final/ holds the model; "
        "train.end_checkpoint=resumable keeps one, to extend this run with --resume"
    )
    return False


# --- listing, pruning, best -----------------------------------------------------------------------


def prune_checkpoints(checkpoints_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints (never `best`); return what was deleted."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 (got {keep_last}): the newest checkpoint is never deleted")
    clean_stale(checkpoints_dir)
    doomed = [path for _, path in list_checkpoints(checkpoints_dir)[:-keep_last]]
    for path in doomed:
        remove_dir(path)
    return doomed
