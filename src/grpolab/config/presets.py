"""The shipped presets (configs/*.yaml) described from themselves: what each is for in words, and
its numbers read from the resolved config. The README's presets table (scripts/config_reference.py)
and `grpolab train --help` both print these rows, so neither can disagree with the presets.
"""

from __future__ import annotations

from grpolab.config.load import configs_dir, load_config, load_yaml, resolve_preset  # shipped presets: our names
from grpolab.config.schema import Config

# What each preset is for, in words; the numbers come from the preset. A new preset needs a line here
# (the --check fails naming it). Additions are merged onto another preset with `+experiment=NAME`.
PURPOSE: dict[str, str] = {
    "default": "the `grpolab train` default: the embedded tiny model learns addition on CPU in minutes",
    "small_numbers": "the canonical script's small-numbers test (`--dataset_type small_numbers`)",
    "mixed": "arithmetic + counting + comparison, accuracy per task type (`--dataset_type mixed`)",
    "eval_test_improved": "the eval-improvement config: pass@k, lenient rewards",
    "arithmetic": "the canonical TRL arithmetic script (beta 0.1, lr 5e-6, temperature 0.7)",
    "gsm8k_lora": "the Tunix GRPO demo (its rewards, beta 0.08, eps 0.2, lr 3e-6, top_k 50)",
    "openr1_rewards": "the open-r1 reward mix (accuracy, format, reasoning steps, cosine, repetition, length)",
    "smollm2_cpu": "a real pretrained model on CPU, offline (from a pip wheel), with a reasoning prompt",
    "agent_tiny": "multi-turn calculator agent on the tiny agent model (masked mode), offline",
    "smollm2_agent_cpu": "SmolLM2 learns the calculator on CPU, offline: a warm start on gold traces, then masked GRPO",
    "agent_masked": "the agent trainer's masked multi-turn run (calculator tool, judge reward)",
    "real_model_gpu": "shared settings of the `*_gpu` presets (bf16, LoRA r32, GSM8K, reasoning prompt)",
    "qwen2.5_0.5b_gpu": "one GPU; full FT: `model.finetune=full optim.lr=1e-6`",
    "qwen2.5_1.5b_gpu": "one GPU",
    "gemma3_270m_gpu": "one GPU",
    "gemma3_1b_gpu": "one GPU",
    "qwen3_1.7b_gpu": "one GPU",
    "quick_test": "a few steps; also an addition to any preset",
    "full_training": "addition: the preset's whole length, safe to lose (agent-tunix's production run)",
}
ADDITIONS = ("full_training",)  # only meaningful on top of a preset: listed by the keys they set


def _task(cfg: Config) -> str:
    data = cfg.data
    if data.task in ("arithmetic", "small_numbers"):
        lo, hi = (0, 10) if data.task == "small_numbers" else (data.min_num, data.max_num)
        return f"{data.task} {lo}..{hi} ({' '.join(dict.fromkeys(data.operations))})"
    return data.task


def _length(cfg: Config) -> str:
    steps = f"{cfg.train.max_steps} steps"
    return f"{cfg.train.epochs} epochs ({steps})" if cfg.train.epochs else steps


def _flat(tree: dict, prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append(f"`{prefix}{key}={value}`")
    return out


def presets() -> list[str]:
    """Every shipped preset's name."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def rows() -> list[list[str]]:
    """[name, model, fine-tuning, task, questions x generations, new tokens, length, purpose] per preset;
    additions last, with what they set in place of the purpose's numbers."""
    missing = [name for name in presets() if name not in PURPOSE]
    if missing:
        raise ValueError(f"config/presets.py: add a PURPOSE line for preset(s) {', '.join(missing)}")
    out = []
    for name in [p for p in PURPOSE if p not in ADDITIONS]:
        cfg = load_config(name)
        finetune = f"LoRA r{cfg.model.lora_rank}" if cfg.model.finetune == "lora" else cfg.model.finetune
        step = f"{cfg.train.questions_per_step} x {cfg.grpo.num_generations}"
        out.append([name, cfg.model.name, finetune, _task(cfg), step, str(cfg.generation.max_new_tokens),
                    _length(cfg), PURPOSE[name]])  # fmt: skip
    for name in ADDITIONS:
        sets = ", ".join(_flat(load_yaml(resolve_preset(name))))
        out.append([f"+experiment={name}", "", "", "", "", "", "", f"{PURPOSE[name]}: {sets}"])
    return out


def help_text() -> str:
    """The presets for `grpolab train --help`: name, model, fine-tuning, length, purpose."""
    lines = ['presets (-c NAME; README "Presets" has the full table):']
    for name, model, finetune, _, _, _, length, purpose in rows():
        what = f"{model}, {finetune}, {length}: {purpose}" if model else purpose
        lines.append(f"  {name:<26} {what}")
    return "\n".join(lines)
