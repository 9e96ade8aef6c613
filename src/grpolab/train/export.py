"""`grpolab export`: a checkpoint's model without its training state, optionally with the LoRA
adapter merged into the base weights, with a model card and the run's config; optionally uploaded.

What to export: a run's `final/` (the best model; its config and results are in the run directory
above it) or any `checkpoints/step-N/` or `checkpoints/best/` (config inside, results in
trainer_state.json and the run's status.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from grpolab.errors import UserError
from grpolab.models.verify import check_model_dir
from grpolab.train.checkpoint import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CONFIG_FILE,
    TRAINER_STATE_FILE,
    TRAINING_FILES,
    atomic_dir,
)

STATUS_FILE = "status.json"
CARD_FILE = "README.md"


class ExportError(UserError, ValueError):
    """What to export cannot be found or read (one line for the user)."""


def run_config_file(ckpt_dir: Path) -> Path:
    """The config of the run that wrote `ckpt_dir`: its own config.yaml (a checkpoint or an earlier
    export), else the run directory's (`RUN/final` sits right in the run directory)."""
    for candidate in (Path(ckpt_dir) / CONFIG_FILE, Path(ckpt_dir).parent / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    raise ExportError(
        f"no {CONFIG_FILE} in {ckpt_dir} or in its run directory {Path(ckpt_dir).parent}: export a run's "
        "final/ or checkpoints/step-N/ directory"
    )


def run_results(ckpt_dir: Path) -> dict[str, Any]:
    """What the model card reports, in status.json's shape.

    `final/`: the run's status.json (before/after on the final split, best step, stop reason). A
    checkpoint: the before-training numbers and the validation at its step, from its
    trainer_state.json; the run's end results would describe other weights."""
    ckpt_dir = Path(ckpt_dir)
    state_file = ckpt_dir / TRAINER_STATE_FILE
    if state_file.is_file():
        state = _read_json(state_file)
        history = state.get("history") or [{}]
        return {
            "status": f"checkpoint at step {state.get('step')}",
            "steps": state.get("step"),
            "before": state.get("before") or {},
            "validation": {k: v for k, v in history[-1].items() if k != "step"},
        }
    return _read_json(ckpt_dir.parent / STATUS_FILE)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_adapter_dir(ckpt_dir: Path) -> bool:
    return (Path(ckpt_dir) / ADAPTER_CONFIG).is_file()


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
    card: str | None = None,
    config_yaml: str | None = None,
) -> Path:
    """Write a checkpoint's model to `out_dir` without the training state.

    Adapter + merge: load the base (`base_model_name`, default the adapter config's
    base_model_name_or_path), apply the adapter, `merge_and_unload()`, save a plain transformers model.
    Adapter without merge: the adapter files (base_model_name, if given, is written into its config).
    Full weights: copied. Tokenizer files in the checkpoint come along in every case.
    An existing non-empty `out_dir` is replaced only with overwrite=True (it is deleted).
    card: README.md text (see model_card.py); config_yaml: the run's config, written as config.yaml.
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
        if config_yaml is not None:
            (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        if card is not None:  # replaces peft's placeholder adapter card
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return out_dir


def export_run(ckpt_dir: Path, out_dir: Path, merge: bool = False) -> Path:
    """`grpolab export`: the model of a run's final/ or checkpoint, its config and a model card."""
    from grpolab.config.load import ConfigError, load_config
    from grpolab.models.loading import resolve_source
    from grpolab.train.model_card import model_card

    ckpt_dir = Path(ckpt_dir)
    config_file = run_config_file(ckpt_dir)
    try:
        cfg = load_config(str(config_file), [])  # a saved resolved config: our names only
    except ConfigError as err:
        raise ExportError(f"{config_file}: {err}") from None
    adapter = is_adapter_dir(ckpt_dir)
    card = model_card(cfg, run_results(ckpt_dir), is_adapter=adapter, merged=adapter and merge)
    return export_model(
        ckpt_dir,
        Path(out_dir),
        merge=merge,
        base_model_name=resolve_source(cfg.model.name, cfg.model.cache_dir),
        card=card,
        config_yaml=config_file.read_text(encoding="utf-8"),
    )
