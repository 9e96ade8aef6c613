"""train.precision fp32 vs bf16: one policy forward+backward on SmolLM2-135M-Instruct, and HF generate.

    python benchmarks/precision.py --cache /tmp/smol-cache-bf16 --threads 2 --repeats 3

A [rows, prompt + completion] batch of random token ids (every position real) goes through
sequence_logprobs in train mode and a backward, split into micro-batches of --micro rows as the
trainer's auto micro-batch does (512 positions). Precisions are interleaved per repeat, after one
untimed warm-up each, so a change in machine load hits both; wall and process CPU seconds are both
reported. With --generate, also HF generate of
--gen-rows prompts x --gen-tokens new tokens with and without bf16 autocast. Prints medians; a
benchmark, not a test. On a shared machine the figures are indicative only: report `uptime` with them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from grpolab.algo.logprobs import sequence_logprobs
from grpolab.compat.load import load_config
from grpolab.models.loading import load_model
from grpolab.rollout.backend import HFGenerator, SamplingParams
from grpolab.rollout.types import Rollout, collate
from grpolab.train.precision import autocast_for


def batch_of(rows: int, prompt: int, completion: int, vocab: int, pad_id: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab, (rows, prompt + completion), generator=g).tolist()
    return collate([Rollout(i, r[:prompt], r[prompt:], [1] * completion, "", False) for i, r in enumerate(ids)], pad_id)


def train_pass(model, batch, micro: int, amp) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    model.train()
    model.zero_grad(set_to_none=True)
    for first in range(0, len(batch), micro):
        sub = batch.select(slice(first, first + micro))
        with amp:
            logp, _ = sequence_logprobs(model, sub, temperature=1.0)
        (-(logp * sub.completion_mask).sum() / batch.completion_mask.sum()).backward()
    model.eval()
    return time.perf_counter() - start, time.process_time() - cpu


def generate(generator, prompts, tokens: int, amp) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    with amp:
        out = generator.generate(prompts, SamplingParams(max_new_tokens=tokens, greedy=True, num_samples=1))
    if any(len(ids) != tokens for ids in out.completions):
        raise SystemExit("a row stopped early: the two precisions would not do the same work")
    return time.perf_counter() - start, time.process_time() - cpu


def medians(values: list[tuple[float, float]]) -> str:
    """Wall seconds, and the process's CPU seconds (less sensitive to other jobs on a shared machine)."""
    wall, cpu = (statistics.median(v) for v in zip(*values))
    return f"median {wall:.2f} s wall, {cpu:.2f} s CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", default=None, help="model.cache_dir (the converted SmolLM2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--completion", type=int, default=96)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--no-train", action="store_true", help="only the generation timing")
    parser.add_argument("--gen-rows", type=int, default=8)
    parser.add_argument("--gen-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = [f"model.cache_dir={args.cache}"] if args.cache else []
    cfgs = {
        p: load_config(None, ["model.name=smollm2-135m-instruct", f"train.precision={p}", *cache], env_file=None)
        for p in ("fp32", "bf16")
    }
    loaded = load_model(cfgs["fp32"].model, beta=0.0, device=torch.device("cpu"))
    model, tokenizer = loaded.model, loaded.tokenizer
    batch = batch_of(args.rows, args.prompt, args.completion, len(tokenizer), tokenizer.pad_token_id)
    amps = {p: autocast_for(cfg, model) for p, cfg in cfgs.items()}
    times: dict[str, list[tuple[float, float]]] = {p: [] for p in amps}
    if not args.no_train:
        for amp in amps.values():
            train_pass(model, batch.select(slice(0, args.micro)), args.micro, amp)  # warm-up
        for _ in range(args.repeats):
            for p, amp in amps.items():
                times[p].append(train_pass(model, batch, args.micro, amp))
                print(f"  {p}: {times[p][-1]}", flush=True)
        shape = f"[{args.rows}, {args.prompt + args.completion}]"
        for p, values in times.items():
            print(f"forward+backward {shape} {p}: {medians(values)}")
    if args.generate:
        generator = HFGenerator(model, tokenizer.pad_token_id, [])  # no stop id: every row makes every token
        prompts = [row[: args.prompt] for row in batch.input_ids[: args.gen_rows].tolist()]
        gen: dict[str, list[tuple[float, float]]] = {p: [] for p in amps}
        for amp in amps.values():
            generate(generator, prompts[:1], 4, amp)  # warm-up
        for _ in range(args.repeats):
            for p, amp in amps.items():
                gen[p].append(generate(generator, prompts, args.gen_tokens, amp))
                print(f"  generate {p}: {gen[p][-1]}", flush=True)
        for p, values in gen.items():
            print(f"generate {args.gen_rows} x {args.gen_tokens} tokens {p}: {medians(values)}")


if __name__ == "__main__":
    main()
