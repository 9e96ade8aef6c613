"""The policy's weights as (Hugging Face name, tensor) pairs, ready for an inference engine to load.

Full fine-tuning: the model's own state dict. LoRA: the MERGED weights W + scale * B @ A, computed per
adapted layer with peft's `get_delta_weight`, without merging in place: `merge_adapter()` followed by
`unmerge_adapter()` would add and subtract the delta in float, drifting the base weights a little
every step, and the trainer's reference (the adapter switched off) must stay exactly the base model.

Why merged weights and not the engine's own LoRA support: vLLM's LoRA path needs the adapter written
to disk and re-registered under a new id every step, and it applies punica kernels whose CPU
coverage varies by version; a merged reload is one path for both fine-tuning modes, is exact (the
engine then runs the same dense matmul as for full fine-tuning) and costs one full weight copy per
step, which is what full fine-tuning pays anyway.
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
def engine_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) with the names of the plain Hugging Face model (no peft prefixes)."""
    base = _base_model(model)
    merged: dict[str, torch.Tensor] = {}
    for prefix, module in base.named_modules():
        if _is_lora_layer(module):
            adapters = [a for a in module.active_adapters if a in getattr(module, "lora_A", {})]
            weight = module.base_layer.weight
            if adapters and not getattr(module, "merged", False) and not getattr(module, "disable_adapters", False):
                weight = weight + sum(module.get_delta_weight(a) for a in adapters)
            merged[f"{prefix}.weight"] = weight
            if getattr(module.base_layer, "bias", None) is not None:
                merged[f"{prefix}.bias"] = module.base_layer.bias
    for name, tensor in base.state_dict().items():
        if any(marker in name for marker in LORA_MARKERS):
            continue  # adapter factors and the wrapped base weights: replaced by the merged ones
        yield name, tensor
    yield from merged.items()
