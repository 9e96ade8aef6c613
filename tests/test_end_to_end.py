"""Short real runs on the embedded tiny model: the whole loop, determinism, LoRA, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from grpolab.api import GRPOTrainer
from grpolab.cli.main import main
from grpolab.parallel.sharding import Unsharded
from run_helpers import QUICK, quick_config, read_metrics, without_time

pytestmark = pytest.mark.slow


def test_full_finetune_run_changes_weights_and_writes_the_run_directory(tmp_path):
    api = GRPOTrainer(args=quick_config(tmp_path, "optim.lr=1e-3", "grpo.beta=0.05"))
    trainer = api.trainer
    before = [p.detach().clone() for p in trainer.model.parameters()]
    summary = api.train()
    assert summary.status == "finished" and summary.steps == 3
    # the exported model is the best checkpoint; the trained weights moved during the run
    step3 = torch.load(summary.run_dir / "checkpoints" / "step-3" / "optimizer.pt", weights_only=True)
    assert step3["state"], "optimizer state saved"
    rows = read_metrics(summary.run_dir)
    train_rows = [r for r in rows if "loss" in r]
    assert len(train_rows) == 3
    for row in train_rows:
        assert all(v == v and abs(v) != float("inf") for v in row.values() if isinstance(v, float))
        assert row["tokens/trainable"] > 0 and "kl" in row and "rewards/numeric/mean" in row
    assert any("eval/accuracy" in r for r in rows)
    for name in ("config.yaml", "train.log", "metrics.jsonl", "samples.jsonl", "status.json"):
        assert (summary.run_dir / name).is_file(), name
    assert (summary.run_dir / "checkpoints" / "best" / "model.safetensors").is_file()
    assert (summary.run_dir / "final" / "model.safetensors").is_file()
    # the warm-started model gets mixed rewards, so some group has a spread and the weights move
    assert any(r["frac_reward_zero_std"] < 1 for r in train_rows)
    from grpolab.train.checkpoint import load_checkpoint

    load_checkpoint(
        summary.run_dir / "checkpoints" / "step-3", model=trainer.model, optimizer=None, scheduler=None,
        shards=Unsharded(trainer.model),
    )  # fmt: skip
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert json.loads((summary.run_dir / "status.json").read_text())["status"] == "finished"
    assert summary.before and summary.after and "test/accuracy" in summary.after


def test_same_seed_same_metrics(tmp_path):
    configs = [quick_config(tmp_path / str(i), "train.max_steps=2", "eval.every_steps=0") for i in (1, 2)]
    runs = [GRPOTrainer(args=cfg).train() for cfg in configs]
    assert without_time(read_metrics(runs[0].run_dir)) == without_time(read_metrics(runs[1].run_dir))


def test_lora_run_saves_an_adapter_that_peft_loads(tmp_path):
    from peft import AutoPeftModelForCausalLM

    cfg = quick_config(tmp_path, "model.finetune=lora", "model.lora_rank=4", "train.max_steps=2", "optim.lr=1e-2")
    summary = GRPOTrainer(args=cfg).train()
    best = summary.run_dir / "checkpoints" / "step-2"
    assert (best / "adapter_model.safetensors").is_file()
    model = AutoPeftModelForCausalLM.from_pretrained(str(best))
    assert any("lora_" in name for name, _ in model.named_parameters())


def test_cli_train_runs_a_preset_with_overrides(tmp_path, capsys):
    code = main(["train", "--config", "default", *QUICK, "train.max_steps=1", f"train.output_dir={tmp_path}"])
    assert code == 0
    assert "run directory:" in capsys.readouterr().out


def test_cli_rejects_bad_config_before_loading_a_model(capsys, monkeypatch):
    import grpolab.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["train", "optim.lr=-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_unreachable_hub_model_fails_fast_with_instructions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["train", *QUICK, "model.name=some-org/not-cached-model", f"train.output_dir={tmp_path}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "some-org/not-cached-model" in err and "model.name=DIR" in err
