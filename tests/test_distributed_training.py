"""The real trainer under torchrun with 2 CPU processes (gloo): one log, one checkpoint, resumable at
world size 1, and a validation baseline identical to a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dist_workers import free_port
from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from run_helpers import QUICK, read_metrics

pytestmark = pytest.mark.slow


def torchrun_train(args: list[str], timeout: float = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "-m", "grpolab", "train", *args,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_train_and_the_checkpoint_resumes_on_one(tmp_path):
    out = tmp_path / "ddp"
    args = [*QUICK, "train.max_steps=2", "train.save_every=2", f"train.output_dir={out}", "train.run_name=ddp"]
    torchrun_train(args)
    runs = list(out.glob("ddp/*/metrics.jsonl"))
    assert len(runs) == 1  # one run directory: rank 0 writes, the other rank logs nothing
    run_dir = runs[0].parent
    rows = read_metrics(run_dir)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2]  # each step logged once
    assert train_rows[0]["tokens/trainable"] > 0
    assert (run_dir / "checkpoints" / "step-2" / "trainer_state.json").is_file()

    # the same config in one process: the baseline validation is identical (same model, greedy)
    one = load_config("default", [*args, f"train.output_dir={tmp_path / 'one'}"], env_file=None, environ={})
    single = GRPOTrainer(args=one).train()
    first_eval = lambda rows: next(r for r in rows if "eval/accuracy" in r)  # noqa: E731
    single_rows = read_metrics(single.run_dir)
    assert first_eval(single_rows) == first_eval(rows) | {"time": first_eval(single_rows)["time"]}
    # after two steps: the ranks sample their own rollouts (their own RNG streams), so the runs differ
    # by sampling noise only (exact equality of the update is the scripted tests' job); 8 test questions
    final = lambda rows: next(r for r in rows if "final/test/accuracy" in r)["final/test/accuracy"]  # noqa: E731
    assert abs(final(single_rows) - final(rows)) <= 0.25

    # the world-size-2 checkpoint resumes in a single process
    cfg = load_config(
        "default", [*args, "train.max_steps=3", f"train.resume={run_dir / 'checkpoints' / 'step-2'}"],
        env_file=None, environ={},
    )  # fmt: skip
    resumed = GRPOTrainer(args=cfg).train()
    assert resumed.run_dir == run_dir and resumed.steps == 3
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


def test_fsdp_lora_trains_on_two_processes_and_resumes_on_one(tmp_path):
    out = tmp_path / "fsdp"
    args = [*QUICK, "train.max_steps=2", "train.save_every=2", f"train.output_dir={out}", "train.run_name=fsdp",
            "model.finetune=lora", "model.lora_rank=4", "optim.lr=5e-2", "distributed.strategy=fsdp"]  # fmt: skip
    torchrun_train(args)
    run_dir = next(out.glob("fsdp/*/metrics.jsonl")).parent
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    ckpt = run_dir / "checkpoints" / "step-2"
    # the checkpoint is the plain single-process format: a loadable adapter, optimizer ids 0..n-1
    import torch
    from safetensors.torch import load_file

    adapter = load_file(ckpt / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    optimizer = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert sorted(optimizer["state"]) == list(range(len(adapter)))
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()

    # one process loads it: the adapter weights it resumes with are the ones the two ranks trained
    cfg = load_config(
        "default", [*args, "train.max_steps=3", "distributed.strategy=ddp", f"train.resume={ckpt}"],
        env_file=None, environ={},
    )  # fmt: skip
    trainer = GRPOTrainer(args=cfg).trainer
    trainer.restore(ckpt)
    trained = {k: v for k, v in trainer.model.state_dict().items() if "lora_B" in k}
    assert trained and any(float(v.abs().max()) > 0 for v in trained.values())  # lora_B starts at 0: it moved
    for key, value in trained.items():
        saved = adapter[key.replace(".default.", ".")]
        assert torch.equal(value, saved), key
    assert trainer.state.step == 2
    trainer.run_lock.release()  # this process is done with the run: torchrun may resume it now

    # and two FSDP processes load it back into their shards (adapter names, optimizer ids) and go on
    torchrun_train([*args, "train.max_steps=3", f"train.resume={ckpt}"])
    assert [r["step"] for r in read_metrics(run_dir) if "loss" in r] == [1, 2, 3]
