"""The policy's weights for an inference engine: (Hugging Face name, tensor) pairs, or a LoRA adapter.

Full fine-tuning: the model's own state dict. LoRA, merged (the default on CPU): the weights
W + scale * B @ A, computed per adapted layer with peft's `get_delta_weight`, without merging in
place: `merge_adapter()` followed by `unmerge_adapter()` would add and subtract the delta in float,
drifting the base weights a little every step, and the trainer's reference (the adapter switched
off) must stay exactly the base model.

LoRA, adapter only (`generation.vllm_weight_sync=adapter`, the default for LoRA on a GPU): the engine
gets the base weights once and then only the adapter each step, written by peft and reloaded in place
by vLLM's LoRA support (a few MB instead of the whole model). On CPU vLLM's LoRA kernels made
generation 3-6x slower than the dense merged weights on SmolLM2-135M (docs/experiments.md,
2026-12-07), far more than the sync saves, so CPU keeps the merged path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

LORA_MARKERS = ("lora_", "base_layer.")


def _base_model(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _is_lora_layer(module: Any) -> bool:
    return hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")


@torch.no_grad()
def engine_weights(model: Any, *, merge_adapters: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) with the names of the plain Hugging Face model (no peft prefixes).
    merge_adapters=False: a LoRA model's base weights alone (what an engine with its own LoRA holds)."""
    base = _base_model(model)
    merged: dict[str, torch.Tensor] = {}
    for prefix, module in base.named_modules():
        if _is_lora_layer(module):
            adapters = [a for a in module.active_adapters if a in getattr(module, "lora_A", {})]
            weight = module.base_layer.weight
            if (
                merge_adapters
                and adapters
                and not getattr(module, "merged", False)
                and not getattr(module, "disable_adapters", False)
            ):
                weight = weight + sum(module.get_delta_weight(a) for a in adapters)
            merged[f"{prefix}.weight"] = weight
            if getattr(module.base_layer, "bias", None) is not None:
                merged[f"{prefix}.bias"] = module.base_layer.bias
    for name, tensor in base.state_dict().items():
        if any(marker in name for marker in LORA_MARKERS):
            continue  # adapter factors and the wrapped base weights: replaced by the merged ones
        yield name, tensor
    yield from merged.items()


def is_lora(model: Any) -> bool:
    return hasattr(model, "peft_config") and any(_is_lora_layer(m) for m in model.modules())


def lora_rank(model: Any) -> int:
    """The active adapter's rank r (an engine's LoRA slots must be at least this large)."""
    return int(model.peft_config[model.active_adapter].r)


def write_adapter(model: Any, folder: str) -> str:
    """The active adapter as peft writes it (adapter_config.json + safetensors, what vLLM loads);
    returns its folder (peft puts an adapter not named "default" in a subfolder of that name)."""
    name = model.active_adapter
    model.save_pretrained(folder, selected_adapters=[name], safe_serialization=True)
    return folder if name == "default" else f"{folder}/{name}"
