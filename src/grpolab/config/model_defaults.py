"""Settings the default preset tunes for the embedded tiny model, which a real model must not inherit
silently.

The default preset exists so that `grpolab train` learns something in minutes on CPU with a 1M-
parameter character model: full fine-tuning at lr 5e-4, 24 new tokens, no system prompt, T 1.2.
The same values would wreck a real model (lr 5e-4 full FT destroys a pretrained LM in a few steps;
24 tokens cut every reasoning chain). `grpolab train model.name=Qwen/...` therefore names the values
it inherited, and points at the real-model presets.
"""

from __future__ import annotations

from typing import Any

from grpolab.config.schema import Config

TINY_MODELS = ("tiny", "tiny-agent")
# dotted key -> the tiny-model value of the default preset
TINY_TUNED: dict[str, Any] = {
    "optim.lr": 5.0e-4,
    "generation.max_new_tokens": 24,
    "data.system_prompt": "",
    "generation.temperature": 1.2,
}


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def tiny_settings_warning(cfg: Config) -> str | None:
    """One line naming the tiny-model settings a real model is about to run with, or None."""
    if cfg.model.name in TINY_MODELS:
        return None
    inherited = [f"{key}={_get(cfg, key)!r}" for key, value in TINY_TUNED.items() if _get(cfg, key) == value]
    if not inherited:
        return None
    return (
        f"model.name={cfg.model.name} runs with settings tuned for the tiny model: {', '.join(inherited)} "
        f"(model.finetune={cfg.model.finetune}); use a real-model preset (-c smollm2_cpu on CPU, "
        "-c qwen2.5_0.5b_gpu ... on GPU) or set these keys"
    )


LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")


def unused_lora_warning(cfg: Config) -> str | None:
    """LoRA settings on a full fine-tuning run (`model.lora_rank=8` on a full-FT preset): they do
    nothing, which the user should hear rather than find out from the run's size."""
    if cfg.model.finetune != "full":
        return None
    given = [f"model.{key}" for key in LORA_KEYS if key in cfg.model.model_fields_set]
    if not given:
        return None
    return f"{', '.join(given)}: no effect with model.finetune=full (all weights train); add model.finetune=lora"
