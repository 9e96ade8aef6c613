"""The bad-input table of the reliability audit (issue 14): each row is a malformed input that must
end in one clear `error:` line naming the problem, a non-zero exit code, and no traceback.

Used by tests/test_bad_inputs.py (one parametrised test per row) and benchmarks/chaos_audit.py.
Every row runs `python -m grpolab ...` in a fresh directory; `setup` writes the files it needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grpolab.models.tiny_model import TINY_DIR

QUICK = ["-c", "quick_test", "logging.quiet=true", "logging.tensorboard=false"]


@dataclass
class BadInput:
    name: str
    argv: list[str]  # after `python -m grpolab`; "{d}" is replaced by the case's directory
    expect: str  # a substring of the error line
    setup: Callable[[Path], None] = lambda _d: None
    env: dict[str, str] = field(default_factory=dict)
    needs_no_gpu: bool = False


def _write(rel: str, data: str | bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def _tiny_copy(d: Path, name: str = "model", damage: str | None = None) -> Path:
    target = d / name
    shutil.copytree(TINY_DIR, target)
    weights = target / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"not a safetensors file" * 10)
    elif damage == "no-config":
        (target / "config.json").unlink()
    return target


def _checkpoint(d: Path, damage: str | None = "truncate") -> None:
    """A checkpoint-shaped directory around the tiny model, its weights damaged."""
    ckpt = _tiny_copy(d, "run/checkpoints/step-2", damage)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 2}))
    (ckpt / "config.yaml").write_text("model:\n  name: tiny\n")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pt"):
        (ckpt / name).write_bytes(b"")


def _resumable(damage: str) -> Callable[[Path], None]:
    """A checkpoint that `train -c quick_test` may resume (its config.yaml is that run's), with
    `damage` (config.yaml, the model's config.json, or one of the .pt files) replaced by garbage."""

    def setup(d: Path) -> None:
        from grpolab.compat.load import load_config
        from grpolab.config.load import config_to_yaml

        ckpt = _tiny_copy(d, "run/checkpoints/step-2")
        from grpolab.data.order import QuestionOrder
        from grpolab.eval.early_stopping import EarlyStopping
        from grpolab.train.state import RunState

        state = RunState(QuestionOrder(100, 4, 42), EarlyStopping("eval/accuracy", 0, 0.0))
        state.step = 2
        (ckpt / "trainer_state.json").write_text(json.dumps(state.state_dict()))
        (ckpt / "config.yaml").write_text(config_to_yaml(load_config("quick_test", [], env_file=None, environ={})))
        import torch

        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pt"):
            if name == damage:
                (ckpt / name).write_bytes(b"\x80\x02garbage, not a torch file" * 20)
            else:  # well-formed, so that the row fails on its own damage
                torch.save({}, ckpt / name)
        if damage == "config.yaml":
            (ckpt / "config.yaml").write_text("model: [unclosed\n")
        elif damage == "config.json":
            (ckpt / "config.json").write_text("{not json")

    return setup


def _run_dir(d: Path) -> None:
    (d / "run").mkdir()
    (d / "run" / "status.json").write_text(json.dumps({"status": "finished"}))


def _chain(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for step in steps:
            step(d)

    return setup


CASES = [
    BadInput(
        "preset includes itself",
        ["train", "-c", "{d}/a.yaml"],
        "includes itself",
        _chain(_write("a.yaml", "defaults: [{d}/b.yaml]\n"), _write("b.yaml", "defaults: [{d}/a.yaml]\n")),
    ),
    BadInput(
        "duplicate YAML key",
        ["train", "-c", "{d}/dup.yaml"],
        "duplicate key 'lr'",
        _write("dup.yaml", "optim:\n  lr: 1.0e-5\n  lr: 2.0e-5\n"),
    ),
    BadInput("--resume key=value", ["train", *QUICK, "train.resume=grpo.beta=0.1"], "is not a checkpoint path"),
    BadInput("--resume missing path", ["train", *QUICK, "--resume", "{d}/nowhere"], "checkpoint not found"),
    BadInput(
        "--resume run dir without checkpoints",
        ["train", *QUICK, "--resume", "{d}/run"],
        "run directory without checkpoints",
        _run_dir,
    ),
    BadInput(
        "--resume half-written .tmp-step dir",
        ["train", *QUICK, "--resume", "{d}/.tmp-step-3-99999"],
        "unfinished save",
        _write(".tmp-step-3-99999/model.safetensors", b"x"),
    ),
    BadInput(
        "--resume truncated checkpoint",
        ["train", *QUICK, "train.output_dir={d}/out", "--resume", "{d}/run/checkpoints/step-2"],
        "truncated or not a safetensors file",
        _checkpoint,
    ),
    BadInput(
        "non-UTF-8 dataset",
        ["train", *QUICK, "data.task=jsonl", "data.path={d}/qa.jsonl"],
        "line 2 is not valid UTF-8",
        _write("qa.jsonl", b'{"question": "q", "answer": "1"}\n{"question": "caf\xe9"}\n'),
    ),
    BadInput(
        "answer column of lists",
        ["train", *QUICK, "data.task=jsonl", "data.path={d}/qa.jsonl"],
        "column 'answer' holds a list",
        _write("qa.jsonl", "".join(json.dumps({"question": f"q{i}", "answer": [i, 0]}) + "\n" for i in range(40))),
    ),
    BadInput(
        "answer 1e400 (JSON overflows to inf)",
        ["train", *QUICK, "data.task=jsonl", "data.path={d}/qa.jsonl"],
        "row 2: column 'answer' holds inf, which is not a finite number",
        _write("qa.jsonl", '{"question": "q1", "answer": 1}\n{"question": "q2", "answer": 1e400}\n'),
    ),
    BadInput(
        "answer NaN in a CSV",
        ["train", *QUICK, "data.task=jsonl", "data.path={d}/qa.csv"],
        "row 3: column 'answer' holds 'NaN', which is not a finite number",
        _write("qa.csv", "question,answer\nq1,1\nq2,2\nq3,NaN\n"),
    ),
    BadInput(
        "train.questions_per_step larger than the training set",
        ["train", *QUICK, "train.output_dir={d}/out", "train.questions_per_step=60"],
        "train.questions_per_step (60) is larger than the training set (50 questions)",
    ),
    BadInput(
        "model.lora_target_modules matching nothing",
        [
            "train",
            *QUICK,
            "train.output_dir={d}/out",
            "model.finetune=lora",
            "model.lora_target_modules=[nosuchmodule]",
        ],
        "model.lora_target_modules: ['nosuchmodule'] match no module of tiny",
    ),
    BadInput(
        "model.attn_implementation=banana", ["train", *QUICK, "model.attn_implementation=banana"], "unknown attention"
    ),
    BadInput(
        "--resume with a garbage config.yaml",
        ["train", *QUICK, "train.output_dir={d}/out", "--resume", "{d}/run/checkpoints/step-2"],
        "config.yaml is not valid YAML",
        _resumable("config.yaml"),
    ),
    BadInput(
        "--resume with a garbage config.json",
        ["train", *QUICK, "train.output_dir={d}/out", "--resume", "{d}/run/checkpoints/step-2"],
        "config.json: not valid JSON",
        _resumable("config.json"),
    ),
    BadInput(
        "--resume with a garbage optimizer.pt",
        ["train", *QUICK, "train.output_dir={d}/out", "--resume", "{d}/run/checkpoints/step-2"],
        "optimizer.pt is truncated or not a torch file",
        _resumable("optimizer.pt"),
    ),
    BadInput("non-UTF-8 .env", ["train", *QUICK], ".env: line 1 is not valid UTF-8", _write(".env", b"SEED=caf\xe9\n")),
    BadInput(
        "model dir without config.json",
        ["train", *QUICK, "model.name={d}/model"],
        "has no config.json",
        lambda d: _tiny_copy(d, damage="no-config") and None,
    ),
    BadInput(
        "truncated model.safetensors (train)",
        ["train", *QUICK, "model.name={d}/model"],
        "truncated or not a safetensors file",
        lambda d: _tiny_copy(d, damage="truncate") and None,
    ),
    BadInput(
        "garbage model.safetensors (eval)",
        ["eval", "--model", "{d}/model", *QUICK[:2]],
        "truncated or not a safetensors file",
        lambda d: _tiny_copy(d, damage="garbage") and None,
    ),
    BadInput(
        "truncated checkpoint (export)",
        ["export", "{d}/run/checkpoints/step-2", "--out", "{d}/out"],
        "truncated or not a safetensors file",
        _checkpoint,
    ),
    BadInput("train.device=cuda without GPU", ["train", *QUICK, "train.device=cuda"], "no CUDA GPU", needs_no_gpu=True),
    BadInput("train.device=banana", ["train", *QUICK, "train.device=banana"], "train.device"),
    BadInput(
        "unknown early_stopping_metric",
        ["train", *QUICK, "train.early_stopping_metric=eval/acc"],
        "did you mean 'eval/accuracy'",
    ),
    BadInput("generation.temperature=inf", ["train", *QUICK, "generation.temperature=inf"], "finite number"),
    BadInput("optim.lr=inf", ["train", *QUICK, "optim.lr=.inf"], "finite number"),
    BadInput(
        "eval.size > data.val_size",
        ["train", *QUICK, "eval.size=50", "data.val_size=8"],
        "eval.size (50) is larger than data.val_size (8)",
    ),
    BadInput(
        "eval --adapter on a full checkpoint",
        ["eval", "--model", "tiny", *QUICK[:2], "--adapter", "{d}/model"],
        "not a LoRA adapter",
        lambda d: _tiny_copy(d) and None,
    ),
    BadInput(
        "eval --adapter missing dir",
        ["eval", "--model", "tiny", *QUICK[:2], "--adapter", "{d}/nowhere"],
        "is not a directory",
    ),
    BadInput(
        "eval --out on an unwritable path",
        ["eval", "--model", "tiny", *QUICK[:2], "--out", "{d}/file/out.json"],
        "eval --out: cannot write",
        _write("file", ""),
    ),
    BadInput(
        "OUTPUT_DIR on an unwritable path",
        ["train", *QUICK],
        "train.output_dir: cannot write",
        _write("file", ""),
        env={"OUTPUT_DIR": "{d}/file/outputs"},
    ),
    BadInput(
        "export to an existing file",
        ["export", "{d}/run/checkpoints/step-2", "--out", "{d}/file"],
        "is an existing file",
        _chain(lambda d: _checkpoint(d, None), _write("file", "")),
    ),
    BadInput(
        "export to a non-empty dir",
        ["export", "{d}/run/checkpoints/step-2", "--out", "{d}/full"],
        "is not empty",
        _chain(lambda d: _checkpoint(d, None), _write("full/x", "")),
    ),
    BadInput(
        "export RUN_DIR without checkpoints or final",
        ["export", "{d}/run", "--out", "{d}/out"],
        "holds no model",
        _run_dir,
    ),
    BadInput(
        "judge reward without its API key",
        ["train", *QUICK, "rewards=[{name: judge, model: m}]"],
        "needs an API key in $OPENROUTER_API_KEY",
        env={"OPENROUTER_API_KEY": ""},
    ),
]


@dataclass
class Outcome:
    code: int
    stderr: str

    @property
    def problem(self) -> str | None:
        """None for a clean one-line error; else what is wrong with the output."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        if self.code == 0:
            return "exit code 0"
        if "Traceback" in self.stderr:
            return "a traceback"
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return f"{len(lines)} stderr lines, not one 'error:' line"
        return None


def run_case(case: BadInput, directory: Path, timeout_s: float = 120) -> Outcome:
    directory.mkdir(parents=True, exist_ok=True)
    case.setup(directory)
    for path in directory.rglob("*.yaml"):  # setups may refer to their own directory
        path.write_text(path.read_text().replace("{d}", str(directory)))
    argv = [arg.replace("{d}", str(directory)) for arg in case.argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    env.pop("OUTPUT_DIR", None)
    env.update({k: v.replace("{d}", str(directory)) for k, v in case.env.items()})
    if not any(a.startswith("train.output_dir") for a in argv) and "OUTPUT_DIR" not in case.env:
        env["OUTPUT_DIR"] = str(directory / "outputs")
    proc = subprocess.run(
        [sys.executable, "-m", "grpolab", *argv],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return Outcome(proc.returncode, proc.stderr)
