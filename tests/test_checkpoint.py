"""Checkpoints: full and LoRA round trips, RNG, export --merge, pruning, and a save killed mid-way."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from grpolab.models.verify import ModelFilesError
from grpolab.parallel.sharding import Unsharded
from grpolab.train.checkpoint import (
    clean_stale,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_dir,
)
from grpolab.train.export import export_model
from run_helpers import micro_llama

IDS = torch.tensor([[3, 5, 7, 9, 11, 13], [2, 4, 6, 8, 10, 12]])


def tiny_llama(seed: int = 0) -> Any:
    return micro_llama(seed)


def train_step(model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def make_optim(model: Any) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 4))  # warmup
    return optimizer, scheduler


def params(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


STATE = {"step": 1, "epoch": 0, "question_order": {"position": 8}, "history": [{"step": 1, "reward": 0.5}]}


def test_full_model_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path: Path) -> None:
    model = tiny_llama()
    optimizer, scheduler = make_optim(model)
    train_step(model, optimizer, scheduler)
    seed_all(1)
    ckpt = save_checkpoint(
        step_dir(tmp_path, 1),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        trainer_state=STATE,
        config_yaml="model:\n  name: tiny\n",
        is_peft=False,
    )
    expected_draws = draw()
    # What one more step from the saved state gives: the resumed run must reproduce it exactly.
    saved = params(model)
    train_step(model, optimizer, scheduler)
    expected_after_step = params(model)
    expected_lr = scheduler.get_last_lr()

    train_step(model, optimizer, scheduler)  # drift further, and scramble every RNG
    seed_all(9)
    state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, shards=Unsharded(model))

    assert state == STATE
    assert (ckpt / "config.yaml").read_text() == "model:\n  name: tiny\n"
    assert (ckpt / "model.safetensors").is_file() and not (ckpt / "adapter_config.json").exists()
    assert same(params(model), saved)
    assert draw() == expected_draws
    train_step(model, optimizer, scheduler)  # needs the restored AdamW moments and LR schedule
    assert same(params(model), expected_after_step)
    assert scheduler.get_last_lr() == expected_lr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x02garbage" * 30, "optimizer.pt: not a torch file of tensors"),  # before: a pickle traceback
        (None, "optimizer state does not fit"),  # a torch file of something else: before, a KeyError
    ],
)
def test_a_garbage_optimizer_file_is_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    model = tiny_llama()
    optimizer, scheduler = make_optim(model)
    ckpt = save_checkpoint(
        step_dir(tmp_path, 1), model=model, optimizer=optimizer, scheduler=scheduler,
        trainer_state=STATE, config_yaml="", is_peft=False,
    )  # fmt: skip
    if content is None:
        torch.save({"not": torch.zeros(2)}, ckpt / "optimizer.pt")
    else:
        (ckpt / "optimizer.pt").write_bytes(content)
    with pytest.raises(ModelFilesError, match=message) as caught:
        load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, shards=Unsharded(model))
    assert "\n" not in str(caught.value)


def lora_model(tmp_path: Path) -> Any:
    """A LoRA model whose adapter config points at a base saved under tmp_path, so peft can find it."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base_dir = tmp_path / "base"
    if not base_dir.exists():
        tiny_llama().save_pretrained(base_dir)
    base = LlamaForCausalLM.from_pretrained(base_dir)
    # init_lora_weights=False: B is random too, so the adapter changes the outputs from the start.
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, cfg)


def test_lora_round_trip_and_peft_auto_loading(tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    model = lora_model(tmp_path)
    optimizer, scheduler = make_optim(model)
    train_step(model, optimizer, scheduler)
    ckpt = save_checkpoint(
        tmp_path / "checkpoints" / "step-1",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        trainer_state=STATE,
        config_yaml="",
        is_peft=True,
    )
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    saved = params(model)
    with torch.no_grad():
        expected_logits = model(input_ids=IDS).logits
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(1.0)
    train_step(model, optimizer, scheduler)
    load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, shards=Unsharded(model))
    assert same(params(model), saved)  # LoRA weights restored, base weights never changed

    auto = AutoPeftModelForCausalLM.from_pretrained(ckpt)
    with torch.no_grad():
        torch.testing.assert_close(auto(input_ids=IDS).logits, expected_logits)


class FakeTokenizer:
    def save_pretrained(self, path: str, state_dict: dict | None = None) -> None:
        Path(path, "tokenizer.json").write_text("{}")


def test_export_merge_gives_a_plain_model_with_the_same_outputs(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = lora_model(tmp_path)
    optimizer, _ = make_optim(model)
    ckpt = save_checkpoint(
        tmp_path / "step-3",
        model=model,
        optimizer=optimizer,
        scheduler=None,
        trainer_state={"step": 3},
        config_yaml="",
        is_peft=True,
        tokenizer=FakeTokenizer(),
    )
    out = export_model(ckpt, tmp_path / "export", merge=True, base_model_name=str(tmp_path / "base"))
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not names & {"adapter_config.json", "optimizer.pt", "rng_state.pt", "trainer_state.json"}
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not hasattr(merged, "peft_config")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=IDS).logits, model(input_ids=IDS).logits)
        # The adapter is not a no-op, so the equality above says the merge really happened.
        assert not torch.allclose(base(input_ids=IDS).logits, merged(input_ids=IDS).logits)

    plain = export_model(ckpt, tmp_path / "adapter-only", merge=False, base_model_name="org/base")
    assert json.loads((plain / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/base"
    assert not (plain / "optimizer.pt").exists()
    with pytest.raises(FileExistsError):  # an export never silently deletes a directory
        export_model(ckpt, plain)
    export_model(ckpt, plain, overwrite=True)
    assert json.loads((plain / "adapter_config.json").read_text())["base_model_name_or_path"] != "org/base"


def test_wrong_model_kind_is_rejected(tmp_path: Path) -> None:
    model = tiny_llama()
    optimizer, _ = make_optim(model)
    claimed = {"trainer_state": {}, "config_yaml": "", "is_peft": True}  # a plain model said to be LoRA
    with pytest.raises(ValueError, match="is_peft=True"):
        save_checkpoint(tmp_path / "step-1", model=model, optimizer=optimizer, scheduler=None, **claimed)
    assert not any(tmp_path.iterdir())


# --- listing, pruning, atomicity (a small fake model: no transformers needed) ---------------------


class FakeModel(torch.nn.Module):
    """A module with `save_pretrained`, like a PreTrainedModel; `pause` makes the save hang after
    writing part of its weights (the subprocess test kills it there)."""

    def __init__(self, size: int = 4, pause: bool = False) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(size * size, dtype=torch.float32).reshape(size, size))
        self.pause = pause

    def save_pretrained(self, path: str, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        save_file({"w": self.w.detach()}, os.path.join(path, "model.safetensors"))
        if self.pause:
            with open(os.path.join(path, "model-00002.safetensors"), "wb") as f:
                f.write(b"\0" * 1024)  # a second shard, half written
                f.flush()
                print("WRITING", flush=True)
                time.sleep(120)


class Loadable(FakeModel):
    """`from_pretrained` like transformers', but it draws random numbers first, as a model class that
    initialises its weights before loading them would."""

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype) -> Loadable:
        from safetensors.torch import load_file

        fresh = cls()
        torch.nn.init.normal_(fresh.w)
        fresh.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
        return fresh


def load_unsharded(ckpt: Path, model: torch.nn.Module, **options: Any) -> dict[str, Any]:
    """load_checkpoint of a one-process model, weights only unless an optimizer/scheduler is given."""
    options = {"optimizer": None, "scheduler": None, **options}
    return load_checkpoint(ckpt, model=model, shards=Unsharded(model), **options)


def fake_save(ckpt: Path, step: int, model: torch.nn.Module | None = None) -> Path:
    model = model or FakeModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = {"trainer_state": {"step": step}, "config_yaml": "", "is_peft": False}
    return save_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=None, **saved)


def test_latest_prune_and_best(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (5, 10, 15, 20, 25):
        fake_save(step_dir(root, step), step)
    (root / "step-30").mkdir()  # no trainer_state.json: not a checkpoint
    (root / ".tmp-step-35-1234").mkdir()  # a save in progress
    (root / "step-x").mkdir()
    # By number, not by name: "step-5" sorts after "step-25" as a string.
    assert latest_checkpoint(root) == root / "step-25"

    best = root / "best"
    fake_save(best, 10)  # the best step is saved in full, as a step is
    assert latest_checkpoint(root) == root / "step-25"  # best is not a step
    assert prune_checkpoints(root, keep_last=2) == [root / "step-5", root / "step-10", root / "step-15"]
    assert [s for s, _ in list_checkpoints(root)] == [20, 25]
    # best survives its step being pruned, and is complete.
    assert json.loads((best / "trainer_state.json").read_text()) == {"step": 10}
    assert (best / "model.safetensors").stat().st_size > 0

    fake_save(best, 25)  # replacing best leaves no .old-/.tmp- dirs behind
    assert json.loads((best / "trainer_state.json").read_text()) == {"step": 25}
    assert not [p.name for p in root.iterdir() if p.name.startswith((".old", ".del", ".tmp-best"))]
    with pytest.raises(ValueError):
        prune_checkpoints(root, keep_last=0)


def test_failed_save_leaves_nothing_and_resaving_replaces(tmp_path: Path) -> None:
    fake_save(tmp_path / "step-1", 1)

    class Broken(FakeModel):
        def save_pretrained(self, path: str, state_dict: dict | None = None) -> None:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fake_save(tmp_path / "step-1", 2, Broken())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1"]
    assert json.loads((tmp_path / "step-1" / "trainer_state.json").read_text()) == {"step": 1}
    fake_save(tmp_path / "step-1", 3)
    assert json.loads((tmp_path / "step-1" / "trainer_state.json").read_text()) == {"step": 3}


def test_rng_is_restored_after_the_weights(tmp_path: Path) -> None:
    seed_all(3)
    fake_save(tmp_path / "step-1", 1)
    expected = draw()
    seed_all(4)
    loadable = Loadable()
    load_unsharded(tmp_path / "step-1", loadable)
    assert draw() == expected  # Loadable.from_pretrained's draw did not leak into the restored stream
    seed_all(4)
    expected_python = random.random()
    seed_all(4)
    loadable = Loadable()
    load_unsharded(tmp_path / "step-1", loadable, restore_rng=False)
    assert random.random() == expected_python  # weights only: the stream was not rewound to step 1's


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clean_stale_restores_an_interrupted_replace(tmp_path: Path) -> None:
    pid = dead_pid()
    fake_save(tmp_path / f".old-best-{pid}", 7)  # killed between "best -> .old" and ".tmp -> best"
    fake_save(tmp_path / f".tmp-best-{pid}", 9)
    (tmp_path / f".tmp-step-3-{os.getpid()}").mkdir()  # our own: in progress, left alone
    clean_stale(tmp_path)
    assert json.loads((tmp_path / "best" / "trainer_state.json").read_text()) == {"step": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".tmp-step-3-{os.getpid()}", "best"]


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_checkpoint import FakeModel, fake_save
    fake_save(Path(sys.argv[1]) / "step-2", 2, FakeModel(size=512, pause=True))  # 1 MB of weights
    """
)


def test_save_killed_midway_leaves_previous_checkpoint_loadable(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    model = FakeModel()
    fake_save(step_dir(root, 1), 1, model)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "WRITING"  # blocks until the save is under way
        tmp = root / f".tmp-step-2-{proc.pid}"
        assert (tmp / "model.safetensors").is_file()  # the kill lands mid-save
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (root / "step-2").exists()
    assert latest_checkpoint(root) == root / "step-1"
    with torch.no_grad():
        model.w.add_(1.0)

    restored = Loadable()
    assert load_unsharded(root / "step-1", restored) == {"step": 1}
    assert torch.equal(restored.w, FakeModel().w)
    prune_checkpoints(root, keep_last=1)  # the killed save's temp dir is cleaned up
    assert sorted(p.name for p in root.iterdir()) == ["step-1"]
