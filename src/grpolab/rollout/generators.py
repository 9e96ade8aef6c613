"""Pick the generation backend named by `generation.backend`, and keep its weights equal to the policy's.

`hf` generates with the policy module itself, so it never needs a sync. `vllm` (an engine in this
process) and `vllm_server` (one in a `grpolab vllm-serve` process) hold their own copy of the weights:
`sync_after_step` loads the policy into it after every optimizer step, before the next rollout, and
reports how long that took as `time/weight_sync`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpolab.config.schema import Config
from grpolab.rollout.backend import Generator, HFGenerator


def engine_max_model_len(cfg: Config) -> int:
    """The longest sequence the engine must hold: the prompt plus everything generated after it."""
    g = cfg.generation
    if cfg.agent.enabled:
        return g.max_prompt_length + cfg.agent.max_total_tokens
    return g.max_prompt_length + g.max_new_tokens


def build_generator(
    cfg: Config,
    model: Any,
    pad_id: int,
    stop_ids: list[int],
    seed: int,
    rank: int = 0,
    barrier: Callable[[], None] | None = None,
) -> Generator:
    """The configured backend. rank and barrier matter to vllm_server only: under torchrun every rank
    sends its prompts to the one server, rank 0 alone sends the weights, and all ranks wait at the
    barrier until it has (before the first rollout and after every sync)."""
    if cfg.generation.backend == "hf":
        return HFGenerator(model, pad_id, stop_ids)
    if cfg.generation.backend == "vllm_server":
        from grpolab.rollout.vllm_server import VLLMServerClient

        return VLLMServerClient(
            cfg.generation.vllm_server_url, model, stop_ids, sends_weights=rank == 0, barrier=barrier
        )
    from grpolab.rollout.vllm_backend import VLLMGenerator

    g = cfg.generation
    return VLLMGenerator(
        model,
        stop_ids,
        max_model_len=engine_max_model_len(cfg),
        seed=seed,
        kv_cache_gib=g.vllm_kv_cache_gib,
        gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        adapter_sync=adapter_sync(cfg, model),
    )


def adapter_sync(cfg: Config, model: Any) -> bool:
    """Whether the colocated engine gets the LoRA adapter alone each step. auto: on a GPU only -- on CPU
    vLLM's LoRA kernels slowed generation 3-6x on SmolLM2, more than a merged reload costs."""
    choice = cfg.generation.vllm_weight_sync
    if choice != "auto":
        return choice == "adapter"
    return cfg.model.finetune == "lora" and next(model.parameters()).device.type == "cuda"


def sync_after_step(generator: Generator, model: Any) -> dict[str, float]:
    """After an optimizer step: give a backend with its own weights the policy's; {} for HF."""
    sync = getattr(generator, "sync_weights", None)
    if sync is None:
        return {}
    return {"time/weight_sync": float(sync(model))}
