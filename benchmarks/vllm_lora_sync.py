"""LoRA weight sync into the colocated vLLM engine: merged weights vs the adapter alone (issue 24 item 5).

SmolLM2-135M-Instruct with a rank-16 all-linear adapter, through grpolab's VLLMGenerator: each round
changes the adapter, syncs it (`time/weight_sync`), then samples the benchmark workload (4 prompts x 8
completions x 64 tokens). Each mode runs in its own process, one after the other, in one invocation:

    python benchmarks/vllm_lora_sync.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def run_mode(mode: str, rounds: int) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpolab.models.gguf_cache import cached_model_dir
    from grpolab.rollout.backend import SamplingParams
    from grpolab.rollout.vllm_backend import VLLMGenerator

    torch.manual_seed(0)
    folder = cached_model_dir("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
    )
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"What is {12 + i} * 13? Think step by step."}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        for i in range(4)
    ]
    engine = VLLMGenerator(
        policy, [tokenizer.convert_tokens_to_ids("<|im_end|>")], max_model_len=512, seed=0, kv_cache_gib=2,
        gpu_memory_utilization=0.3, adapter_sync=mode == "adapter",
    )  # fmt: skip
    torch.set_num_threads(2)
    params = SamplingParams(max_new_tokens=64, temperature=1.0, num_samples=8)
    syncs, gens, tokens = [], [], 0
    for _ in range(rounds):
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.add_(torch.randn_like(param) * 0.01)
        syncs.append(engine.sync_weights(policy))
        started = time.perf_counter()
        out = engine.generate(prompts, params)
        gens.append(time.perf_counter() - started)
        tokens = sum(len(c) for c in out.completions)
    engine.close()
    return {
        "sync_s": statistics.median(syncs),
        "generate_s": statistics.median(gens),
        "tokens": tokens,
        "start_s": engine.start_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=["merged", "adapter"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.rounds)))
        return
    rows = {}
    for mode in ("merged", "adapter"):
        child = [sys.executable, __file__, "--mode", mode, "--rounds", str(args.rounds)]
        lines = subprocess.run(child, check=True, capture_output=True, text=True).stdout.strip().splitlines()
        rows[mode] = json.loads(lines[-1])
    print(f"{'sync':8} {'time/weight_sync (median s)':>28} {'generate (median s)':>20} {'tokens':>7}")
    for mode, row in rows.items():
        print(f"{mode:8} {row['sync_s']:28.3f} {row['generate_s']:20.2f} {row['tokens']:7d}")


if __name__ == "__main__":
    main()
