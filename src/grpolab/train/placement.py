"""The policy (and its reference) loaded and placed on this process's ranks: parameters synced from
rank 0 (a fresh LoRA adapter is random), then sharded under FSDP or wrapped as unsharded, so the update
never asks which one it has."""

from __future__ import annotations

import dataclasses

from grpolab.config.schema import Config
from grpolab.models.loading import LoadedModel, attach_adapter, load_model, prepare_model
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Shards, Unsharded, accelerate_fsdp_requested, fsdp_settings, shard_model
from grpolab.rollout.generators import adapter_sync
from grpolab.rollout.weight_sync import is_lora
from grpolab.train.inputs import RunInputs
from grpolab.train.precision import store_frozen_linears_in_bf16, trains_in_bf16


def load_and_place(cfg: Config, inputs: RunInputs, ctx: DistContext) -> tuple[LoadedModel, Shards, Shards]:
    """(loaded model, policy shards, reference shards). Call after seeding: a fresh LoRA adapter is
    drawn from the run's seed."""
    if inputs.model is not None:
        model = inputs.model.to(ctx.device)
        loaded = prepare_model(
            model, inputs.tokenizer, cfg.model, beta=cfg.grpo.beta, source=cfg.model.name, lora=inputs.lora
        )
    else:
        loaded = load_model(cfg.model, beta=cfg.grpo.beta, device=ctx.device, lora=inputs.lora, quiet=cfg.logging.quiet)
    if inputs.adapter is not None:
        loaded = dataclasses.replace(loaded, model=attach_adapter(loaded.model, inputs.adapter))
    ctx.sync_parameters(loaded.model)  # start every rank from rank 0's weights
    reference = loaded.reference
    if reference is not None:
        ctx.sync_parameters(reference)
    shards: Shards = Unsharded(loaded.model)
    reference_shards: Shards = Unsharded(reference)
    sharded = ctx.enabled and (cfg.distributed.strategy == "fsdp" or accelerate_fsdp_requested())
    if reference is not None and not sharded and trains_in_bf16(cfg, reference):
        # it only ever runs under bf16 autocast: the same products, half the memory (train/precision.py)
        store_frozen_linears_in_bf16(reference)
    if frozen_base_in_bf16(cfg, loaded.model, sharded):
        store_frozen_linears_in_bf16(loaded.model)  # LoRA's frozen base: the same, adapters stay float32
    if sharded:
        settings = fsdp_settings()
        shards = shard_model(loaded.model, ctx, cfg.distributed, settings)
        if reference is not None:
            reference_shards = shard_model(reference, ctx, cfg.distributed, settings)
    return loaded, shards, reference_shards


def frozen_base_in_bf16(cfg: Config, model: object, sharded: bool) -> bool:
    """Whether a LoRA policy's frozen base layers are stored in bfloat16: under bf16 training, with a
    colocated vLLM engine that applies the adapter itself (generation.vllm_weight_sync=adapter, auto on
    a GPU). Every read of the base then happens under autocast (training passes, the reference with
    adapters off, the warm start) or as the engine's base weights, which are bfloat16 too.

    Not with a merged sync into a bfloat16 engine (auto on CPU): merged from a bfloat16 base, a
    weight only moves once its adapter delta passes half a bfloat16 step, so a young adapter never
    reaches the sampler (round(W + delta) carries a small delta on average; round(round(W) + delta)
    drops it). smollm2_cpu seed 1 ended at 33% that way, against 48.5-56.5% (docs/experiments.md).
    Not with HF generate either, which reads the weights outside autocast; nor under FSDP."""
    return (
        not sharded
        and cfg.generation.backend == "vllm"
        and is_lora(model)
        and adapter_sync(cfg, model)
        and trains_in_bf16(cfg, model)
    )
