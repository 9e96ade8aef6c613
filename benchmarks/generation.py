"""HF generate throughput for a ~0.5B model built from its config (random weights: no download).

    python benchmarks/generation.py                          # GPU: Qwen2-0.5B shape, 16 x 8, 128 / 256 tokens
    python benchmarks/generation.py --prompts 2 --samples 2 --new-tokens 32 --device cpu   # a CPU smoke run

Random weights never sample the stop token on purpose, so every sample runs to `--new-tokens` and
the figure measures the engine (`grpolab.rollout.backend.HFGenerator`), not a model's habits. Prints
one markdown row per repeat and the median; record them in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

from grpolab.rollout.backend import HFGenerator, SamplingParams

QWEN2_0_5B = dict(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
)  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN2_0_5B)).to(device, dtype).eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    gen = HFGenerator(model, pad_id=0, stop_ids=[QWEN2_0_5B["vocab_size"] + 1])  # an id never sampled
    prompts = [torch.randint(1, 150000, (args.prompt_tokens,)).tolist() for _ in range(args.prompts)]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, num_samples=args.samples)
    gen.generate(prompts[:2], SamplingParams(max_new_tokens=8))  # warm-up: CUDA context, kernels
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"# {params_m:.0f}M parameters, {name}, {dtype}, {versions}")
    print("| repeat | generated tokens | seconds | tokens/s |")
    print("|---|---|---|---|")
    rates = []
    for repeat in range(args.repeats):
        sync(device)
        started = time.perf_counter()
        out = gen.generate(prompts, params)
        sync(device)
        seconds = time.perf_counter() - started
        tokens = sum(len(c) for c in out.completions)
        rates.append(tokens / seconds)
        print(f"| {repeat + 1} | {tokens} | {seconds:.2f} | {tokens / seconds:.0f} |", flush=True)
    print(
        f"median: {statistics.median(rates):.0f} generated tokens/s "
        f"({args.prompts} prompts x {args.samples} samples, {args.prompt_tokens} / {args.new_tokens} tokens)"
    )


if __name__ == "__main__":
    main()
