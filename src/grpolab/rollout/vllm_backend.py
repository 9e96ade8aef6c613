"""vLLM as a generation backend, colocated in the training process, weights synced in place.

The same `Generator` protocol as `HFGenerator`: token ids in, sampled ids and their sampling log-probs
out. How it maps onto vLLM, and why:
- One engine per training process, in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so weight sync
  is a function call that hands over tensors, not a copy through a socket.
- `skip_tokenizer_init=True`, `detokenize=False`: prompts go in as `prompt_token_ids` and the engine
  never decodes or re-tokenises anything (token-in, token-out stays exact).
- `logprobs_mode="processed_logprobs"`, `logprobs=0`: the log-prob of each sampled token under the
  distribution it was actually drawn from (after temperature, top-k, top-p), like HFGenerator's.
- `ignore_eos=True` with `stop_token_ids=stop_ids`: the engine stops exactly on our stop ids, as HF
  generate does with `eos_token_id=stop_ids` (vLLM's own eos rule would add the config's eos).
- Greedy = temperature 0. Seeds: each call draws one base seed from torch's RNG, so `train.seed`
  (and the rank offset the trainer adds) decide the rollouts, as they do for HF generate; every
  request and every sample in it gets a seed of its own from that base.
- The engine starts from the policy's config with dummy weights and is synced from the policy at
  once: no checkpoint on disk, and a resumed or LoRA policy is what the engine holds from the start.
- vLLM lowers torch's thread count to 1 and may pin the process's CPUs when it starts ("Reducing
  Torch threads"); the training passes run in this same process, so both are restored afterwards
  (measured in docs/performance.md).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import torch

from grpolab.rollout.backend import GenerationOutput, SamplingParams
from grpolab.rollout.seeds import draw_seed
from grpolab.rollout.weight_sync import engine_weights, is_lora, lora_rank, write_adapter

# vLLM's LoRA slots come in these ranks only (vllm.config.lora.MaxLoRARanks)
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class VLLMGenerator:
    """A colocated vLLM engine holding a copy of `model`'s weights: merged for LoRA, or
    (adapter_sync=True) the base weights once and the adapter through vLLM's own LoRA support."""

    def __init__(
        self,
        model: Any,
        stop_ids: list[int],
        *,
        adapter_sync: bool = False,
        dtype: torch.dtype | None = None,
        **engine: Any,
    ) -> None:
        """dtype: the engine's weights and KV cache (None: the model's); `engine`: the keywords of
        `_start` (max_model_len, seed, kv_cache_gib, gpu_memory_utilization)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        first = next(model.parameters())
        if adapter_sync and not is_lora(model):
            raise ValueError("adapter_sync needs a LoRA (peft) model")
        self._adapter = _AdapterSlot(lora_rank(model)) if adapter_sync else None
        self._start(base.config, dtype or first.dtype, first.device.type == "cpu", stop_ids, **engine)
        if self._adapter is not None:  # the base weights once; each sync then moves the adapter only
            self.load_weights([(n, t.detach()) for n, t in engine_weights(model, merge_adapters=False)])
        self.sync_weights(model)

    @classmethod
    def from_config(cls, config: Any, dtype: torch.dtype, on_cpu: bool, **engine: Any) -> VLLMGenerator:
        """An engine for a model config with dummy weights, to be filled by load_weights (the
        `grpolab vllm-serve` process, whose trainer sends the weights and the stop ids)."""
        generator = cls.__new__(cls)
        generator._adapter = None  # the server takes merged weights over its own channel
        generator._start(config, dtype, on_cpu, [], **engine)
        return generator

    def _start(
        self,
        config: Any,
        dtype: torch.dtype,
        on_cpu: bool,
        stop_ids: list[int],
        *,
        max_model_len: int,
        seed: int,
        kv_cache_gib: float,
        gpu_memory_utilization: float,
    ) -> None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: sync hands over tensors, no socket
        # CPU: the cache is allocated whole at start and counts in the process's memory, so it is sized
        # in bytes (fractions of a GiB); vLLM's env var takes whole GiB and would override the bytes
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
        cache: dict[str, Any] = {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)} if on_cpu else {}
        self.stop_ids = list(stop_ids)
        self.dtype = dtype
        threads = torch.get_num_threads()
        set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        from vllm import LLM

        self._config_dir = tempfile.TemporaryDirectory(prefix="grpolab-vllm-")
        config.save_pretrained(self._config_dir.name)
        engine_dtype: Any = str(dtype).removeprefix("torch.")  # float32, bfloat16, ... (vLLM types a Literal)
        started = time.perf_counter()
        self.llm = LLM(
            model=self._config_dir.name,
            load_format="dummy",  # real weights arrive by load_weights
            skip_tokenizer_init=True,
            dtype=engine_dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=on_cpu,  # CUDA graphs on GPU; nothing to capture on CPU
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",  # our SamplingParams only, never the model's defaults
            # under torchrun (DDP) the process group exists: each rank's engine joins it as its own
            # data-parallel replica (tensor parallel 1) instead of starting a second world
            distributed_executor_backend="external_launcher" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
            **(_whole_prefills(max_model_len) if on_cpu else {}),
            **cache,
            **(self._adapter.engine_options() if self._adapter is not None else {}),
        )
        self.start_seconds = time.perf_counter() - started
        # Restore what the engine changed for the training passes that share this process: vLLM's
        # CPU worker asks for 1 torch thread "for serving" and then monkeypatches
        # torch.set_num_threads to a no-op for the rest of the process (train.torch_threads, user
        # code) -- put the real function back and the thread count we had.
        torch.set_num_threads = set_num_threads  # type: ignore[assignment]
        torch.set_num_threads(threads)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)

    def sync_weights(self, model: Any) -> float:
        """Load the policy's current weights (or only its adapter) into the engine; returns the seconds."""
        if self._adapter is not None:
            started = time.perf_counter()
            self.llm.llm_engine.add_lora(self._adapter.write(model))  # load_inplace: replaces the last one
            self.llm.reset_prefix_cache()
            return time.perf_counter() - started
        return self.load_weights([(name, tensor.detach()) for name, tensor in engine_weights(model)])

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> float:
        """Load (name, tensor) pairs in the engine's checkpoint naming; returns the seconds it took.
        Tensors come in the engine's dtype: vLLM would round them the same way, but logs a warning
        per tensor (and a float32 policy's copy would take twice the memory on the way)."""
        started = time.perf_counter()
        weights = [(name, tensor.to(self.dtype)) for name, tensor in weights]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        return time.perf_counter() - started

    def close(self) -> None:
        """Free the engine (its KV cache and weight copy) now rather than at garbage collection."""
        import gc

        from vllm.distributed.parallel_state import destroy_model_parallel

        engine = getattr(self, "llm", None)
        if engine is None:
            return
        engine.llm_engine.engine_core.shutdown()
        del self.llm
        destroy_model_parallel()  # a later engine in this process builds its groups anew
        gc.collect()

    def sampling_params(self, params: SamplingParams, seed: int) -> Any:
        """Ours -> vLLM's, for one request seeded with `seed` (its n samples get seed .. seed + n - 1)."""
        from vllm import SamplingParams as VLLMSamplingParams

        return VLLMSamplingParams(
            n=params.num_samples,
            temperature=0.0 if params.greedy else params.temperature,
            top_p=1.0 if params.greedy else params.top_p,
            top_k=0 if params.greedy else params.top_k,  # 0 = off, as in our config
            max_tokens=params.max_new_tokens,
            stop_token_ids=self.stop_ids,
            ignore_eos=True,
            repetition_penalty=params.repetition_penalty,
            seed=seed,
            logprobs=0,  # the sampled token's log-prob only
            detokenize=False,
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int | None = None) -> GenerationOutput:
        requests: list[Any] = [{"prompt_token_ids": list(p)} for p in prompts]
        adapter = self._adapter.request if self._adapter is not None else None
        # One seed per request: with one seed for the call, equal prompts (an agent group's G episodes,
        # each its own request) would sample equal completions. vLLM seeds a request's n samples
        # seed + 0..n-1, so request i starts at base + i * n: no two samples share a seed.
        base = draw_seed() if seed is None else seed
        per_request = [self.sampling_params(params, base + i * params.num_samples) for i in range(len(prompts))]
        outputs = self.llm.generate(requests, per_request, lora_request=adapter, use_tqdm=False)
        completions, truncated, logprobs = [], [], []
        for request in outputs:
            for sample in sorted(request.outputs, key=lambda o: o.index):
                ids = list(sample.token_ids)
                completions.append(ids)
                truncated.append(not ids or ids[-1] not in self.stop_ids)
                logprobs.append(_sampled_logprobs(sample.logprobs, ids))
        return GenerationOutput(completions, truncated, logprobs)


def _whole_prefills(max_model_len: int) -> dict[str, Any]:
    """Engine options for CPU: no chunked prefill. A prompt split over two engine steps makes vLLM
    rewind the request's seeded generator (`set_offset`), which a CPU torch.Generator refuses
    ("CPU Generator does not use offset"); our requests are all seeded, so any call whose prompts
    exceed the step's token budget (40 agent episodes of ~120 tokens) crashed. Unchunked, a prompt
    that does not fit waits for the next step, as vLLM itself does on CPU for MLA models."""
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


class _AdapterSlot:
    """The one LoRA slot of an engine whose base weights are the policy's base model: each sync writes
    the adapter (to /dev/shm where there is one: memory, not disk) and reloads it in place under the
    same id, so requests always use the newest adapter and no slot is ever evicted."""

    def __init__(self, rank: int) -> None:
        if rank > _VLLM_LORA_RANKS[-1]:
            raise ValueError(f"vLLM serves LoRA ranks up to {_VLLM_LORA_RANKS[-1]}, the adapter has r={rank}")
        self.slot_rank = next(r for r in _VLLM_LORA_RANKS if r >= rank)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._folder = tempfile.TemporaryDirectory(prefix="grpolab-adapter-", dir=shm)
        self.request: Any = None

    def engine_options(self) -> dict[str, Any]:
        return {"enable_lora": True, "max_lora_rank": self.slot_rank, "max_loras": 1}

    def write(self, model: Any) -> Any:
        from vllm.lora.request import LoRARequest

        path = write_adapter(model, self._folder.name)
        self.request = LoRARequest("policy", 1, path, load_inplace=True)
        return self.request


def _sampled_logprobs(steps: Any, ids: list[int]) -> list[float]:
    """vLLM's per-step {token id: Logprob} (logprobs=0 keeps the sampled token) -> one float per id."""
    if steps is None or len(steps) != len(ids) or any(step is None or tok not in step for step, tok in zip(steps, ids)):
        raise RuntimeError("vLLM returned no log-prob for a sampled token (was logprobs=0 set?)")
    return [float(step[tok].logprob) for step, tok in zip(steps, ids)]
