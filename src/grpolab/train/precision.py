"""train.precision: the dtype the training passes compute in, with the weights left as they are.

`bf16` runs every training forward (policy, reference, old and sampler-comparison log-probs, the
entropy passes) under `torch.autocast(dtype=bfloat16)`: matrix products run in bfloat16 while the
parameters, their gradients and the optimizer state stay in the weights' dtype (float32 master
weights with model.dtype=float32), and log-probs are taken in float32 from the logits
(algo/logprobs.py upcasts before log_softmax). The backward runs outside the context, as torch
recommends: autograd replays each op in the dtype its forward used. This is TRL's `bf16=True`
(mixed precision through transformers' Trainer). `model.dtype=bfloat16` is different: the weights
themselves are bfloat16, with no float32 copy, so small updates can round away.

HF generate is not autocast: its log-probs stay float32, so `mismatch/logp_abs_mean` measures what
bf16 changes in the trainer's log-probs. A vLLM engine follows the training passes into bfloat16
(`engine_dtype`), and the frozen full fine-tuning reference (and a LoRA policy's frozen base where
the engine applies the adapter itself, train/placement.py) keeps its linear layers in bfloat16
(`store_frozen_linears_in_bf16`): they only ever compute in bfloat16 under bf16 training.
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
    with a bf16 vLLM engine made a SmolLM2 step 0.40-0.50x TRL's, against 0.66x in fp32
    (docs/performance.md), but its learning figure is one preset's, so on CPU bf16 stays opt-in.
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


def engine_dtype(cfg: Config, weights: torch.dtype, device: torch.device) -> torch.dtype:
    """generation.vllm_dtype -> the dtype a vLLM engine holds the weights and KV cache in.

    auto: bfloat16 when the training passes run in bf16 (their products round the weights to
    bfloat16 anyway, and the sampler is compared with them through the importance-sampling
    correction), else the weights' own dtype. On this EPYC a bfloat16 engine sampled SmolLM2-135M
    1.7x faster than a float32 one (docs/performance.md); on a GPU, vLLM's attention kernels want a
    half type."""
    choice = cfg.generation.vllm_dtype
    if choice != "auto":
        return torch.float32 if choice == "float32" else torch.bfloat16
    return torch.bfloat16 if resolve_precision(cfg.train.precision, device, weights) == "bf16" else weights


def trains_in_bf16(cfg: Config, model: Any) -> bool:
    """Whether train.precision resolves to bf16 for this model's device and weights."""
    first = next(iter(model.parameters()), None)
    return first is not None and resolve_precision(cfg.train.precision, first.device, first.dtype) == "bf16"


def autocast_for(cfg: Config, model: Any) -> AbstractContextManager[Any]:
    """The context every training forward runs in: bf16 autocast, or nothing (fp32)."""
    if not trains_in_bf16(cfg, model):
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16)


def store_frozen_linears_in_bf16(model: torch.nn.Module) -> int:
    """Store a model's frozen float32 linear layers (weight and bias) in bfloat16; returns the bytes
    saved. For what only ever computes under bf16 autocast: the full fine-tuning KL reference, and a
    LoRA policy's frozen base when the engine applies the adapter itself (train/placement.py). Trainable
    layers (LoRA's A and B) keep their dtype.

    Autocast casts each linear layer's float32 weight to bfloat16 on every call, and caches the cast
    only for weights that require a gradient, so a frozen copy is cast again in every micro-batch
    while its float32 values are never computed with. Stored in bfloat16, the products are the same
    bits (both casts round to nearest even), the casts are gone and the weights take half the
    memory. Weights that another module also uses (an LM head tied to the embeddings) stay float32:
    the embedding lookup is not autocast, so the residual stream would change dtype.

    A float32 checkpoint is loaded without a copy: its weights are views of the file's memory map,
    whose pages stay resident (and count in the process's memory) while any one of them is alive.
    Copying the few frozen weights that remain float32 lets the whole map go: -0.40 GB on SmolLM2."""
    shared = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)}
    saved, stored = 0, set()
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or id(module.weight) in shared:
            continue
        for name, param in module.named_parameters(recurse=False):
            if param.dtype == torch.float32 and not param.requires_grad:
                lowered = torch.nn.Parameter(param.detach().to(torch.bfloat16), requires_grad=False)
                setattr(module, name, lowered)
                stored.add(id(lowered))
                saved += param.numel() * 2
    if saved:  # the frozen weights left (embeddings, norms) get memory of their own, see below
        for param in model.parameters():
            if not param.requires_grad and id(param) not in stored:
                param.data = param.data.clone()
    return saved
