"""`grpolab vllm-serve`: a vLLM engine in its own process for `generation.backend=vllm_server`.

    grpolab vllm-serve -c PRESET [key=value ...] [--host 127.0.0.1] [--port 8000]

The preset (and overrides) give the model (model.name, model.dtype), the longest sequence
(generation.max_prompt_length + max_new_tokens, or agent.max_total_tokens) and the KV cache
(generation.vllm_kv_cache_gib on CPU); give it the same preset as the training run. The engine
starts with dummy weights: the trainer sends its own when it connects (rollout/vllm_server.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "vllm-serve", help="a vLLM engine for generation.backend=vllm_server (generation on its own devices)"
    )
    parser.add_argument("--config", "-c", help="preset name or YAML path (the training run's)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="share of the GPU for the engine (it has its own)"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides (model.name=...)")
    parser.set_defaults(func=cmd_serve)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from grpolab.compat.load import load_config
    from grpolab.config.vllm_install import INSTALL_HINT, vllm_available

    cfg = load_config(args.config or "default", list(args.overrides))  # a bad key fails before the engine
    if not vllm_available():
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from transformers import AutoConfig

    from grpolab.models.loading import pick_device, pick_dtype, resolve_source
    from grpolab.rollout.generators import engine_kv_cache_gib, engine_max_model_len
    from grpolab.rollout.vllm_backend import VLLMGenerator
    from grpolab.rollout.vllm_server import serve
    from grpolab.train.precision import engine_dtype

    device = pick_device(cfg.train.device)
    config = AutoConfig.from_pretrained(resolve_source(cfg.model.name, cfg.model.cache_dir))
    dtype = engine_dtype(cfg, pick_dtype(cfg.model.dtype, device), device)
    engine = VLLMGenerator.from_config(
        config,
        dtype,
        device.type == "cpu",
        max_model_len=engine_max_model_len(cfg),
        seed=cfg.train.seed,
        kv_cache_gib=engine_kv_cache_gib(cfg, config, dtype),
        gpu_memory_utilization=args.gpu_memory_utilization,
    )
    serve(engine, device, args.host, args.port)
    return 0
