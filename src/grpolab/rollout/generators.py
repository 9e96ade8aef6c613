"""Pick the generation backend named by `generation.backend`, and keep its weights equal to the policy's.

`hf` generates with the policy module itself, so it never needs a sync. `vllm` (an engine in this
process) and `vllm_server` (one in a `grpolab vllm-serve` process) hold their own copy of the weights:
`sync_after_step` loads the policy into it after every optimizer step, before the next rollout, and
reports how long that took as `time/weight_sync`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from grpolab.config.schema import Config
from grpolab.rollout.backend import Generator, HFGenerator


def engine_max_model_len(cfg: Config) -> int:
    """The longest sequence the engine must hold: the prompt plus everything generated after it."""
    g = cfg.generation
    if cfg.agent.enabled:
        return g.max_prompt_length + cfg.agent.max_total_tokens
    return g.max_prompt_length + g.max_new_tokens


# auto never asks for more than the fixed size it replaces (vLLM fails at start if memory is short)
KV_CACHE_AUTO_MAX_GIB = 2.0
_KV_BLOCK_TOKENS = 128  # vLLM's CPU block: a sequence holds its length rounded up to this


def kv_bytes_per_token(model_config: Any, dtype: torch.dtype) -> int | None:
    """Bytes of KV cache one token takes: a key and a value per layer and KV head; None where the config
    does not say (then auto keeps the fixed size)."""
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None)
    if not (layers and kv_heads and head_dim):
        return None
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * dtype.itemsize


def engine_kv_cache_gib(cfg: Config, model_config: Any, dtype: torch.dtype, longest_prompt: int | None = None) -> float:
    """generation.vllm_kv_cache_gib, with auto resolved: the most one generate call of this run can fill,
    capped at KV_CACHE_AUTO_MAX_GIB. A call holds at most questions_per_step x num_generations
    sequences in training (an agent turn too) and eval.batch_size x samples in evaluation, each at most
    the longest prompt (longest_prompt tokens, when known and not an agent's; else
    generation.max_prompt_length) plus what is generated after it. A bigger cache is memory the run
    never touches."""
    setting = cfg.generation.vllm_kv_cache_gib
    if setting != "auto":
        return float(setting)
    per_token = kv_bytes_per_token(model_config, dtype)
    if per_token is None:
        return KV_CACHE_AUTO_MAX_GIB
    g, full_length = cfg.generation, engine_max_model_len(cfg)
    prompt = g.max_prompt_length
    if longest_prompt is not None and not cfg.agent.enabled:  # an agent's prompt adds tool schemas unmeasured
        prompt = min(longest_prompt, prompt)
    sequence = full_length - g.max_prompt_length + prompt + _KV_BLOCK_TOKENS
    eval_samples = max(1, cfg.eval.num_samples or max(cfg.eval.pass_k, default=1))
    sequences = max(cfg.train.questions_per_step * cfg.grpo.num_generations, cfg.eval.batch_size * eval_samples)
    # vLLM refuses to start unless one sequence of the engine's full length fits
    tokens = max(sequences * sequence, full_length + _KV_BLOCK_TOKENS)
    return min(KV_CACHE_AUTO_MAX_GIB, tokens * per_token / 2**30)


def build_generator(
    cfg: Config,
    model: Any,
    pad_id: int,
    stop_ids: list[int],
    seed: int,
    rank: int = 0,
    barrier: Callable[[], None] | None = None,
    longest_prompt: int | None = None,
    engine_dtype: torch.dtype | None = None,
) -> Generator:
    """The configured backend. rank and barrier matter to vllm_server only: under torchrun every rank
    sends its prompts to the one server, rank 0 alone sends the weights, and all ranks wait at the
    barrier until it has (before the first rollout and after every sync). longest_prompt (tokens)
    sizes the colocated engine's KV cache under vllm_kv_cache_gib=auto; engine_dtype is the colocated
    engine's (None: the weights')."""
    if cfg.generation.backend == "hf":
        return HFGenerator(model, pad_id, stop_ids)
    if cfg.generation.backend == "vllm_server":
        from grpolab.rollout.vllm_server import VLLMServerClient

        return VLLMServerClient(
            cfg.generation.vllm_server_url, model, stop_ids, sends_weights=rank == 0, barrier=barrier
        )
    from grpolab.rollout.vllm_backend import VLLMGenerator

    g = cfg.generation
    dtype = engine_dtype or next(model.parameters()).dtype
    return VLLMGenerator(
        model,
        stop_ids,
        dtype=dtype,
        max_model_len=engine_max_model_len(cfg),
        seed=seed,
        kv_cache_gib=engine_kv_cache_gib(cfg, model.config, dtype, longest_prompt),
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
