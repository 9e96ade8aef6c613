"""The parts of benchmarks/gpu_check.py, each run in its own process (`gpu_check.py --part NAME`):
grpolab's and TRL's training steps on the same rows and reward callable, plain decode against the
memory-bandwidth roofline, and 2 FSDP2 steps under torchrun. Each prints one `RESULT {json}` line."""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any


def spread(completions: list[Any], **_: Any) -> list[float]:
    """The one reward callable of both engines: a value in [0, 1] that differs between completions."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [(sum(map(ord, text)) % 101) / 100 for text in texts]


def rows(count: int) -> list[dict[str, Any]]:
    """The dataset of both engines: arithmetic questions as chat messages, with their answers."""
    made = []
    for i in range(count):
        a, b = 17 * i % 89 + 10, 31 * i % 97 + 3
        question = f"What is {a} + {b}? Think briefly, then give the number."
        made.append({"prompt": [{"role": "user", "content": question}], "answer": str(a + b)})
    return made


def device_sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak RSS on CPU


def grpolab_settings(args: argparse.Namespace, out: str) -> list[str]:
    return [
        f"model.name={args.model_dir}", f"model.dtype={args.dtype}", f"train.device={args.device}",
        f"train.questions_per_step={args.questions}", f"grpo.num_generations={args.generations}",
        f"generation.max_new_tokens={args.max_new_tokens}", "generation.temperature=1.0", f"grpo.beta={args.beta}",
        "grpo.loss_type=dapo", "optim.lr=1e-6", "optim.scheduler=constant", "optim.warmup_ratio=0",
        f"train.max_steps={args.steps}", f"train.output_dir={out}", "eval.every_steps=0",
        "logging.quiet=true", "logging.report=false", "logging.tensorboard=false",
    ]  # fmt: skip


def part_grpolab(args: argparse.Namespace) -> dict[str, Any]:
    from grpolab import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig.load("default", *grpolab_settings(args, f"{args.work}/grpolab"))
    data = rows(args.questions * args.steps)
    api = GRPOTrainer(model=args.model_dir, reward_funcs=[spread], train_dataset=data, eval_dataset=data[:4], args=cfg)
    trainer = api.trainer  # the training steps alone: no evaluation, no checkpoints
    steps, generation = [], []
    for _ in range(args.steps):
        device_sync(args.device)
        started = time.perf_counter()
        metrics = trainer.train_step()
        device_sync(args.device)
        steps.append(time.perf_counter() - started)
        generation.append(metrics.get("time/generation", float("nan")))
        trainer.state.step += 1
    trainer.tracker.close({})
    api.close()
    return {"step_s": steps, "generation_s": generation, "notes": "HFGenerator, micro_batch_size auto"}


def part_trl(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import trl
        from datasets import Dataset
    except ImportError as err:
        return {"skipped": f"{err.name} is not importable (TRL needs trl and datasets: see gpu_wheels.txt)"}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    cuda = args.device.startswith("cuda")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype))
    clock: list[float] = []
    device = args.device

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            device_sync(device)
            clock.append(time.perf_counter())

        def on_step_end(self, *a: Any, **k: Any) -> None:
            device_sync(device)
            clock[-1] = time.perf_counter() - clock[-1]

    config = trl.GRPOConfig(
        output_dir=f"{args.work}/trl", per_device_train_batch_size=args.questions * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        top_k=0, learning_rate=1e-6, lr_scheduler_type="constant", beta=args.beta, loss_type="dapo",
        max_steps=args.steps, logging_steps=1, report_to="none", save_strategy="no", seed=0, disable_dropout=True,
        gradient_checkpointing=False, bf16=cuda and args.dtype == "bfloat16", use_cpu=not cuda,
    )  # fmt: skip
    data = Dataset.from_list(rows(args.questions * args.steps))  # the rows grpolab trains on
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=[spread], args=config, train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(args.model_dir), callbacks=[StepClock()],
    )  # fmt: skip
    generation: list[float] = []
    generate = trainer._generate  # TRL 1.16's rollout entry point, timed like grpolab's time/generation

    def timed_generate(*a: Any, **k: Any) -> Any:
        device_sync(device)
        started = time.perf_counter()
        out = generate(*a, **k)
        device_sync(device)
        generation.append(time.perf_counter() - started)
        return out

    trainer._generate = timed_generate  # type: ignore[method-assign]
    trainer.train()
    return {"step_s": clock, "generation_s": generation, "notes": f"trl {trl.__version__}, bf16={config.bf16}"}


def roofline_tokens_per_s(
    batch: int, weight_bytes: float, kv_bytes_per_position: float, mean_len: float, bandwidth_gbs: float
) -> float:
    """Decode is bound by memory bandwidth: one step reads every weight once plus each sequence's KV
    cache (mean_len positions) and yields `batch` tokens, so tokens/s <= batch x bandwidth / bytes."""
    step_bytes = weight_bytes + batch * kv_bytes_per_position * mean_len
    return batch * bandwidth_gbs * 1e9 / step_bytes


def part_decode(args: argparse.Namespace) -> dict[str, Any]:
    """Decode tokens/s of plain `generate` (every sample runs to max_new_tokens) and its roofline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype)).to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    prompt = tokenizer.apply_chat_template(rows(1)[0]["prompt"], add_generation_prompt=True, return_tensors="pt")
    prompt = (prompt["input_ids"] if hasattr(prompt, "keys") else prompt).to(args.device)
    c = model.config
    element = torch.finfo(getattr(torch, args.dtype)).bits // 8
    weights = sum(p.numel() for p in model.parameters()) * element
    # keys and values of one position in every layer
    kv_position = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * element
    new = args.max_new_tokens
    figures = []
    for batch in (1, args.questions * args.generations):
        ids = prompt.expand(batch, -1)
        kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=True, temperature=1.0, top_k=0)
        model.generate(ids, attention_mask=torch.ones_like(ids), **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
        device_sync(args.device)
        started = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        device_sync(args.device)
        seconds = time.perf_counter() - started
        mean_len = ids.shape[1] + new / 2  # the KV cache read per step grows from the prompt to prompt + new
        roofline = roofline_tokens_per_s(batch, weights, kv_position, mean_len, args.bandwidth_gbs)
        figures.append({"batch": batch, "tokens_per_s": batch * new / seconds, "roofline_tokens_per_s": roofline})
    return {"decode": figures, "weights_gb": weights / 1e9}


def part_fsdp(args: argparse.Namespace) -> dict[str, Any]:
    """2 steps of `grpolab train` under torchrun with distributed.strategy=fsdp. With one GPU both ranks
    share cuda:0, which NCCL refuses (one rank per device), so the group is gloo unless told otherwise."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = args.fsdp_procs
    device = "cuda:0" if args.device.startswith("cuda") else "cpu"
    settings = grpolab_settings(args, f"{args.work}/fsdp")
    settings += [
        "train.max_steps=2", f"train.questions_per_step={2 * procs}", "grpo.num_generations=4",
        f"train.device={device}", "distributed.strategy=fsdp", f"distributed.backend={args.fsdp_backend}",
        "data.val_size=4", "data.test_size=4", "eval.size=4", "logging.quiet=false",  # the "FSDP: ..." line
    ]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}", f"--master-port={port}"]
    command += ["-m", "grpolab", "train", "-c", "default", *settings]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, timeout=args.fsdp_timeout)
    seconds = time.perf_counter() - started
    log = out.stdout + out.stderr
    units = next((line.split("FSDP: ", 1)[1] for line in log.splitlines() if "FSDP: " in line), None)
    ok = out.returncode == 0 and units is not None
    tail = "" if ok else " | ".join(log.strip().splitlines()[-3:])
    return {"fsdp_ok": ok, "fsdp_s": seconds, "fsdp_units": units, "fsdp_error": tail, "fsdp_procs": procs}


def child(args: argparse.Namespace) -> None:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    run = {"grpolab": part_grpolab, "trl": part_trl, "decode": part_decode, "fsdp": part_fsdp}[args.part]
    result = run(args)
    result["peak_gib"] = peak_memory_gib(args.device)
    print("RESULT " + json.dumps(result), flush=True)
