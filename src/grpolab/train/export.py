"""`grpolab export`: a checkpoint's model without its training state, optionally with the LoRA
adapter merged into the base weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from grpolab.models.verify import check_model_dir
from grpolab.train.checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, TRAINING_FILES, atomic_dir


def check_export_target(out_dir: Path, overwrite: bool = False) -> None:
    """`out_dir` may be created (or replaced, with overwrite): not a file, not a non-empty directory."""
    if out_dir.is_file():
        raise FileExistsError(f"export: --out {out_dir} is an existing file; give a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"export: --out {out_dir} exists and is not empty; choose another directory")


def write_model(model: Any, tokenizer: Any, out_dir: Path, state_dict: dict[str, Any] | None = None) -> Path:
    """save_pretrained into `out_dir` atomically (a kill mid-way leaves the previous `out_dir`, or none,
    never one holding only config.json). Used for a run's `final/`."""
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(str(tmp), state_dict=state_dict)  # None: the model's own
        tokenizer.save_pretrained(str(tmp))
    return Path(out_dir)


def export_model(
    ckpt_dir: Path,
    out_dir: Path,
    merge: bool = False,
    base_model_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint's model to `out_dir` without the training state.

    Adapter + merge: load the base (`base_model_name`, default the adapter config's
    base_model_name_or_path), apply the adapter, `merge_and_unload()`, save a plain transformers model.
    Adapter without merge: the adapter files (base_model_name, if given, is written into its config).
    Full weights: copied. Tokenizer files in the checkpoint come along in every case.
    An existing non-empty `out_dir` is replaced only with overwrite=True (it is deleted).
    """
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    check_export_target(out_dir, overwrite)
    check_model_dir(ckpt_dir, what="export")  # a truncated checkpoint must not export "successfully"
    is_adapter = (ckpt_dir / ADAPTER_CONFIG).is_file()
    skip = set(TRAINING_FILES)
    with atomic_dir(out_dir) as tmp:
        if is_adapter and merge:
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            adapter_cfg = json.loads((ckpt_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
            base_name = base_model_name or adapter_cfg["base_model_name_or_path"]
            base = AutoModelForCausalLM.from_pretrained(base_name, dtype="auto")
            merged = PeftModel.from_pretrained(base, str(ckpt_dir)).merge_and_unload()
            merged.save_pretrained(str(tmp))
            skip |= {ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md"}  # README is peft's adapter card
        for path in ckpt_dir.iterdir():
            if path.is_file() and path.name not in skip and not (tmp / path.name).exists():
                shutil.copy2(path, tmp / path.name)
        if is_adapter and not merge and base_model_name:
            cfg_path = tmp / ADAPTER_CONFIG
            adapter_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            adapter_cfg["base_model_name_or_path"] = base_model_name
            cfg_path.write_text(json.dumps(adapter_cfg, indent=2), encoding="utf-8")
    return out_dir
