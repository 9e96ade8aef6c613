"""train.precision: the dtype the training passes compute in, with the weights left as they are.

`bf16` runs every training forward (policy, reference, old and sampler-comparison log-probs, the
entropy passes) under `torch.autocast(dtype=bfloat16)`: matrix products run in bfloat16 while the
parameters, their gradients and the optimizer state stay in the weights' dtype (float32 master
weights with model.dtype=float32), and log-probs are taken in float32 from the logits
(algo/logprobs.py upcasts before log_softmax). The backward runs outside the context, as torch
recommends: autograd replays each op in the dtype its forward used. This is TRL's `bf16=True`
(mixed precision through transformers' Trainer). `model.dtype=bfloat16` is different: the weights
themselves are bfloat16, with no float32 copy, so small updates can round away.

Generation is not autocast: the sampler's log-probs stay float32, so `mismatch/logp_abs_mean`
measures what bf16 changes in the trainer's log-probs.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch

from grpolab.config.schema import Config


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with
    a bf16 instruction set (x86 avx512_bf16 / amx_bf16, or any `*bf16` capability torch reports).
    Elsewhere autocast still runs, but emulated, and slower than float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        capabilities: dict[str, Any] = getattr(torch.cpu, "get_capabilities", dict)()
        return any(bool(on) for name, on in capabilities.items() if str(name).endswith("bf16"))
    return False


def resolve_precision(precision: str, device: torch.device, weights: torch.dtype) -> str:
    """train.precision -> "fp32" or "bf16" for this device and weights dtype.

    auto: bf16 on a CUDA GPU with bfloat16, fp32 elsewhere. On CPU (an EPYC with avx512_bf16) bf16
    autocast learned the same as fp32 on smollm2_cpu over 3 seeds, but its LoRA passes were only 10%
    faster for 1.4-1.8 GB more memory (docs/experiments.md), so auto keeps fp32 there.
    Raises ValueError (one line) for bf16 where it cannot help: no native bfloat16 on the device, or
    float16 weights (two half types at once)."""
    if precision == "fp32":
        return "fp32"
    if precision == "auto":
        return "bf16" if device.type == "cuda" and native_bf16(device) and weights != torch.float16 else "fp32"
    if weights == torch.float16:
        raise ValueError("train.precision=bf16 with model.dtype=float16: choose one half type (fp32 weights + bf16)")
    if not native_bf16(device):
        raise ValueError(
            f"train.precision=bf16: the {device.type} device has no native bfloat16 (CPU: avx512_bf16 or "
            "amx_bf16; GPU: Ampere or newer), where autocast is emulated and slower; use fp32 or auto"
        )
    return "bf16"


def autocast_for(cfg: Config, model: Any) -> AbstractContextManager[Any]:
    """The context every training forward runs in: bf16 autocast, or nothing (fp32)."""
    first = next(iter(model.parameters()), None)
    if first is None or resolve_precision(cfg.train.precision, first.device, first.dtype) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=first.device.type, dtype=torch.bfloat16)
