"""Training control in real short runs: early stopping, eval and export commands."""

from __future__ import annotations

import json

import pytest

from grpolab.api import GRPOTrainer
from grpolab.cli.main import main
from run_helpers import QUICK, quick_config, read_metrics

pytestmark = pytest.mark.slow


def test_early_stopping_stops_and_says_why(tmp_path):
    # lr tiny: the validation accuracy cannot improve, so patience 1 stops at the first re-evaluation
    cfg = quick_config(tmp_path, "train.max_steps=50", "eval.every_steps=1", "train.patience=1", "optim.lr=1e-12")
    summary = GRPOTrainer(args=cfg).train()
    assert summary.status == "stopped_early"
    assert summary.steps == 1
    assert "no improvement" in summary.stop_reason or "patience" in summary.stop_reason
    log = (summary.run_dir / "train.log").read_text()
    assert "stopping" in log
    evals = [r for r in read_metrics(summary.run_dir) if "eval/accuracy" in r]
    assert [r["step"] for r in evals][:2] == [0, 1]
    assert all("eval/best_accuracy" in r for r in evals)


def test_eval_command_and_export_merge(tmp_path, capsys):
    cfg = quick_config(tmp_path, "model.finetune=lora", "model.lora_rank=4", "train.max_steps=2")
    run = GRPOTrainer(args=cfg).train()
    ckpt = run.run_dir / "checkpoints" / "step-2"
    out = tmp_path / "eval.json"
    args = ["eval", "--model", "tiny", "--adapter", str(ckpt), *QUICK, "eval.pass_k=[1,2]", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    assert metrics["eval/pass@1"] <= metrics["eval/pass@2"]
    assert "eval/accuracy" in metrics and "evaluation on the test split" in capsys.readouterr().out
    merged = tmp_path / "merged"
    assert main(["export", str(ckpt), "--out", str(merged), "--merge"]) == 0
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(merged))
    assert not any("lora_" in name for name, _ in model.named_parameters())


def test_eval_command_runs_the_presets_model_with_its_tools(tmp_path, monkeypatch):
    # `grpolab eval -c agent_tiny` (no --model): the preset's tiny-agent, evaluated the way training
    # validates it, i.e. through the run's rollout sampler: multi-turn episodes with the calculator
    import grpolab.rollout.multi_turn as multi_turn

    episodes: list[int] = []
    original = multi_turn.run_agent_rollouts

    def counting(*args, **kwargs):
        rollouts = original(*args, **kwargs)
        episodes.append(len(rollouts))
        return rollouts

    monkeypatch.setattr(multi_turn, "run_agent_rollouts", counting)
    out = tmp_path / "eval.json"
    small = ["eval.size=4", "data.val_size=4", "data.test_size=4", "data.train_size=8", "train.torch_threads=1"]
    assert main(["eval", "-c", "agent_tiny", "--split", "val", "--out", str(out), *small]) == 0
    assert episodes == [4]  # one greedy episode per validation question
    assert json.loads(out.read_text())["num_questions"] == 4
