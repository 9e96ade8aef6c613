"""`grpolab export`: a checkpoint's model without its training state, optionally with the LoRA
adapter merged into the base weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from grpolab.train.checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, TRAINING_FILES, atomic_dir


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
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another directory or overwrite")
    if not (ckpt_dir / ADAPTER_CONFIG).is_file() and not (ckpt_dir / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt_dir} holds neither an adapter nor a model")
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
