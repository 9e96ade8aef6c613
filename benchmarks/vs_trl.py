"""The same GRPO workload through TRL's GRPOTrainer and through grpolab, on the embedded tiny model.

    pip install -e .[bench]
    python benchmarks/vs_trl.py --steps 30            # full fine-tuning and LoRA, both engines

Same data (the default preset's train split), same B questions x G generations, same sampling,
learning rate, beta and loss type. Each engine/mode runs in its own subprocess so that peak memory
(max RSS) is its own. Held-out accuracy is measured by the same code (grpolab.eval.evaluate, greedy, the
test split) for both. Prints a markdown table; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from grpolab.config.load import load_config
from grpolab.config.schema import Config

SETTINGS = [
    "train.questions_per_step=16",
    "grpo.num_generations=8",
    "generation.max_new_tokens=16",
    "generation.temperature=1.0",
    "grpo.beta=0.0",
    "grpo.loss_type=dapo",
    "optim.scheduler=constant",
    "optim.warmup_ratio=0",
    "eval.every_steps=0",
    "logging.quiet=true",
    "logging.report=false",
    "logging.tensorboard=false",
]


def config(steps: int, finetune: str, lr: float) -> Config:
    extra = [
        f"train.max_steps={steps}",
        f"model.finetune={finetune}",
        f"optim.lr={lr}",
        "train.output_dir=outputs/vs_trl",
    ]
    return load_config("default", [*SETTINGS, *extra], env_file=None, environ={})


def heldout_accuracy(cfg: Config, model: Any, tokenizer: Any) -> float:
    from grpolab.data import build_splits
    from grpolab.eval.evaluate import evaluate, evaluation_reward_set
    from grpolab.rewards import build_rewards
    from grpolab.rollout.backend import HFGenerator
    from grpolab.rollout.single_turn import prompt_ids

    stops = [tokenizer.eos_token_id]
    result = evaluate(
        HFGenerator(model, tokenizer.pad_token_id, stops),
        tokenizer,
        build_splits(cfg.data, cfg.data.seed).test,
        lambda ex: prompt_ids(tokenizer, ex, cfg.data, cfg.generation.max_prompt_length),
        evaluation_reward_set(cfg, build_rewards(cfg.rewards)),
        max_new_tokens=cfg.generation.max_new_tokens,
        batch_size=64,
        pass_k=[],
        num_samples=0,
        temperature=1.0,
        top_p=1.0,
        format_reward=None,
        stop_ids=stops,
        seed=0,
    )
    return result.metrics("test")["test/accuracy"]


def run_grpolab(cfg: Config) -> dict[str, float]:
    from grpolab.api import GRPOTrainer

    trainer = GRPOTrainer(args=cfg).trainer  # the training steps alone: no evaluation, no checkpoints
    started = time.perf_counter()
    while trainer.state.step < cfg.train.max_steps:
        trainer.train_step()
        trainer.state.step += 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "accuracy": heldout_accuracy(cfg, trainer.model, trainer.tokenizer)}


def run_trl(cfg: Config) -> dict[str, float]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.data import build_messages, build_splits
    from grpolab.models.loading import resolve_source
    from grpolab.rewards.correctness import numeric as numeric_reward

    torch.manual_seed(cfg.train.seed)
    source = resolve_source(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    train = build_splits(cfg.data, cfg.data.seed).train
    dataset = Dataset.from_list([{"prompt": build_messages(e, cfg.data), "answer": e.answer} for e in train])

    def numeric(completions: list[Any], answer: list[str], **_: Any) -> list[float | None]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return numeric_reward(texts, answer)

    group = cfg.grpo.num_generations
    args = GRPOConfig(
        output_dir="outputs/vs_trl/trl",
        per_device_train_batch_size=cfg.train.questions_per_step * group,
        num_generations=group,
        max_completion_length=cfg.generation.max_new_tokens,
        temperature=cfg.generation.temperature,
        learning_rate=cfg.optim.lr,
        lr_scheduler_type="constant",
        beta=cfg.grpo.beta,
        loss_type=cfg.grpo.loss_type,
        max_steps=cfg.train.max_steps,
        logging_steps=10,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=cfg.train.seed,
        disable_dropout=True,
    )
    peft_config = None
    if cfg.model.finetune == "lora":
        peft_config = LoraConfig(
            r=cfg.model.lora_rank, lora_alpha=cfg.model.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[numeric],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "accuracy": heldout_accuracy(cfg, trainer.model, tokenizer)}


def child(engine: str, finetune: str, steps: int, lr: float) -> None:
    import torch

    torch.set_num_threads(2)
    cfg = config(steps, finetune, lr)
    result = run_trl(cfg) if engine == "trl" else run_grpolab(cfg)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--engines", nargs="+", default=["grpolab", "trl"])
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--lr-full", type=float, default=5e-4)
    parser.add_argument("--lr-lora", type=float, default=5e-3)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "MODE"))
    args = parser.parse_args()
    if args.child:
        engine, mode = args.child
        child(engine, mode, args.steps, args.lr_full if mode == "full" else args.lr_lora)
        return
    print("| engine | mode | steps | s/step | peak RSS (MB) | held-out accuracy |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes:
        for engine in args.engines:
            command = [sys.executable, __file__, "--steps", str(args.steps), "--child", engine, mode]
            command += ["--lr-full", str(args.lr_full), "--lr-lora", str(args.lr_lora)]
            out = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not lines:
                print(f"| {engine} | {mode} | failed: {out.stderr.strip().splitlines()[-1:]} | | | |")
                continue
            r = json.loads(lines[-1].removeprefix("RESULT "))
            print(
                f"| {engine} | {mode} | {args.steps} | {r['seconds'] / args.steps:.2f} | "
                f"{r['peak_rss_mb']:.0f} | {r['accuracy']:.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
