"""The model card (README.md) that `grpolab export` writes next to an exported model.

What a reader of a model page needs to judge and reproduce the model: the base model, the task and
dataset, the rewards and their weights, the hyperparameters that shape a GRPO run, the held-out
numbers before and after training, and the grpolab version. Everything comes from the run's own
files (config.yaml, status.json), never from memory, so the card cannot claim more than was run.

The YAML front matter is what the Hugging Face Hub reads: `base_model` (only for a hub id: a local
path means nothing there), `library_name` (peft for an adapter), and tags.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import yaml

from grpolab.config.schema import Config

EMBEDDED = {"tiny": "grpolab's embedded tiny model", "tiny-agent": "grpolab's embedded tiny-agent model"}


def grpolab_version() -> str:
    try:
        return importlib.metadata.version("grpolab")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on PYTHONPATH
        from grpolab.version import __version__

        return __version__


def is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not Path(name).expanduser().exists() and not name.startswith((".", "/", "~"))


def dataset_text(cfg: Config) -> str:
    data = cfg.data
    if data.task in ("arithmetic", "small_numbers", "mixed"):
        ops = " ".join(data.operations) if data.task != "mixed" else "arithmetic, counting, comparison"
        return f"synthetic `{data.task}` questions ({ops}; numbers {data.min_num}..{data.max_num})"
    source = data.path or getattr(data, "hf_name", None) or ("openai/gsm8k" if data.task == "gsm8k" else "?")
    return f"`{data.task}` task on `{source}` (question column `{data.question_column}`, answer `{data.answer_column}`)"


def hyperparameters(cfg: Config, steps: int | None) -> list[tuple[str, str]]:
    tuning = "full fine-tuning"
    if cfg.model.finetune == "lora":
        tuning = f"LoRA r={cfg.model.lora_rank}, alpha={cfg.model.lora_alpha}"
    rows = [
        ("fine-tuning", tuning),
        ("questions per step x generations", f"{cfg.train.questions_per_step} x {cfg.grpo.num_generations}"),
        ("learning rate", f"{cfg.optim.lr:g} ({cfg.optim.scheduler}, warmup ratio {cfg.optim.warmup_ratio:g})"),
        ("beta (KL)", f"{cfg.grpo.beta:g}"),
        ("epsilon / epsilon_high", f"{cfg.grpo.epsilon:g} / {cfg.grpo.epsilon_high or cfg.grpo.epsilon:g}"),
        ("loss type", cfg.grpo.loss_type),
        ("max new tokens", str(cfg.generation.max_new_tokens)),
        ("temperature", f"{cfg.generation.temperature:g}"),
        ("steps", f"{steps} of {cfg.train.max_steps}" if steps is not None else str(cfg.train.max_steps)),
        ("seed", str(cfg.train.seed)),
    ]
    if cfg.agent.enabled:
        rows.append(("agent", f"env `{cfg.agent.env}`, {cfg.agent.mode} mode, <= {cfg.agent.max_turns} turns"))
    return rows


def results_table(status: dict[str, Any]) -> list[str]:
    """Before/after rows of the headline metrics (categories and pass@k stay in the run's report).

    `status` is status.json of a finished run (before/after = the final split before training and
    on the exported model), or for a checkpoint its `before` and the `validation` at its step."""
    before, after = status.get("before") or {}, status.get("after") or {}
    keys = [k for k in (after or before) if k.count("/") == 1]
    lines: list[str] = []
    if keys:
        lines += ["| metric | before training | after training |", "|---|---|---|"]
        lines += [f"| {key} | {_number(before.get(key))} | {_number(after.get(key))} |" for key in keys]
        if not after:
            lines.append("")
            lines.append("(This is an intermediate checkpoint: it has no evaluation of its own on this split.)")
    validation = {k: v for k, v in (status.get("validation") or {}).items() if k.count("/") == 1}
    if validation:
        lines += ["", f"Validation at step {status.get('steps')}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_number(value)} |" for key, value in validation.items()]
    if status.get("best_accuracy") is not None:
        lines += ["", f"Best validation accuracy {_number(status['best_accuracy'])} at step {status.get('best_step')}."]
    return lines or ["No evaluation was recorded for this run."]


def _reason(status: dict[str, Any]) -> str:
    return f" ({status['stop_reason']})" if status.get("stop_reason") else ""


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def model_card(cfg: Config, status: dict[str, Any], *, is_adapter: bool, merged: bool) -> str:
    """The README.md text for an export of a run with config `cfg` and status.json `status`."""
    base = cfg.model.name
    front: dict[str, Any] = {
        "library_name": "peft" if is_adapter and not merged else "transformers",
        "tags": ["grpolab", "grpo", "reinforcement-learning"],
    }
    if is_hub_id(base):
        front["base_model"] = base
    shown_base = EMBEDDED.get(base, f"`{base}`")
    form = "a LoRA adapter" if is_adapter and not merged else "a full model"
    if is_adapter and merged:
        form = "a full model (LoRA adapter merged into the base weights)"
    rewards = "\n".join(f"- `{spec.label}` x {spec.weight:g}" for spec in cfg.rewards.functions)
    params = "\n".join(f"| {name} | {value} |" for name, value in hyperparameters(cfg, status.get("steps")))
    split = cfg.eval.final_split
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {cfg.train.run_name}",
        "",
        f"{shown_base} fine-tuned with GRPO by grpolab {grpolab_version()}; this is {form}.",
        "",
        "## Training",
        "",
        f"Data: {dataset_text(cfg)}.",
        "",
        "Rewards (the training reward is their weighted sum):",
        "",
        rewards,
        "",
        "| hyperparameter | value |",
        "|---|---|",
        params,
        "",
        f"## Results ({split} split, greedy)",
        "",
        *results_table(status),
        "",
        f"Run status: {status.get('status', 'unknown')}" + _reason(status) + ".",
        "",
        "## Reproduce",
        "",
        "`config.yaml` next to this card is the run's resolved config (secrets redacted):",
        "",
        "```bash",
        f"pip install grpolab=={grpolab_version()}",
        "grpolab train -c config.yaml",
        "```",
        "",
    ]
    return "\n".join(lines)
