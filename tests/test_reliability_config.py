"""Values that cannot work are rejected at load time, with one line naming the field(s) or file
(issue 14 item 4, issue 11 defect 11: no silent rewrite of what the user set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpolab.compat.load import load_config
from grpolab.config.load import ConfigError
from grpolab.train.checkpoint import resume_conflict


def load(*overrides: str, preset: str = "quick_test", env_file: str | None = None):
    return load_config(preset, list(overrides), env_file=env_file, environ={})


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("generation.temperature=inf", "generation.temperature"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("grpo.beta=-.inf", "grpo.beta"),
        ("eval.temperature=inf", "eval.temperature"),
    ],
)
def test_non_finite_floats_are_rejected(override, field):
    with pytest.raises(ConfigError, match=rf"{field}: Input should be a finite number"):
        load(override)


def test_a_non_finite_reward_weight_is_rejected():
    with pytest.raises(ConfigError, match="finite"):
        load("rewards=[{name: numeric, weight: .inf}]")


def test_eval_size_larger_than_val_size_names_both_and_rewrites_nothing():
    with pytest.raises(ConfigError, match=r"eval\.size \(50\) is larger than data\.val_size \(8\)"):
        load("eval.size=50", "data.val_size=8")
    assert load("eval.size=8", "data.val_size=20").data.val_size == 20  # kept as set


def test_max_steps_and_epochs_in_one_layer_conflict_but_a_later_layer_replaces():
    with pytest.raises(ConfigError, match=r"train\.max_steps \(5\) conflicts with train\.epochs \(2"):
        load("train.epochs=2", "train.max_steps=5")
    # quick_test sets max_steps=4; the command line's epochs replaces it (50 questions / 2 per step = 25 steps)
    assert load("train.epochs=2").train.max_steps == 50
    # a preset's own epochs replaces the max_steps of the preset it includes
    assert load(preset="eval_test_improved").train.max_steps == 250
    assert load("train.max_steps=7", preset="eval_test_improved").train.epochs == 0


def test_early_stopping_metric_is_checked_at_config_time():
    with pytest.raises(ConfigError, match=r"early_stopping_metric 'eval/acc' .* did you mean 'eval/accuracy'"):
        load("train.early_stopping_metric=eval/acc")
    with pytest.raises(ConfigError, match="pass@4"):
        load("train.early_stopping_metric=eval/pass@4")  # no k=4 configured
    assert load("train.early_stopping_metric=eval/pass@4", "eval.pass_k=[1,4]").train.early_stopping_metric
    assert load("train.early_stopping_metric=eval/small/accuracy")  # a category's accuracy


@pytest.mark.parametrize("device", ["banana", "cuda:x", "gpu"])
def test_an_unknown_device_is_rejected(device):
    with pytest.raises(ConfigError, match=r"train\.device"):
        load(f"train.device={device}")


def test_a_duplicate_yaml_key_names_file_key_and_lines(tmp_path: Path):
    preset = tmp_path / "dup.yaml"
    preset.write_text("optim:\n  lr: 1.0e-5\n  weight_decay: 0.0\n  lr: 3.0e-5\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: duplicate key 'lr' at line 4 \(first at line 2\)"):
        load(preset=str(preset))


def test_a_preset_that_includes_itself_is_one_line(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(f"defaults: [{tmp_path / 'b.yaml'}]\n")
    (tmp_path / "b.yaml").write_text(f"defaults: [{tmp_path / 'a.yaml'}]\n")
    with pytest.raises(ConfigError, match=r"includes itself \(a\.yaml -> b\.yaml -> a\.yaml\)"):
        load(preset=str(tmp_path / "a.yaml"))


def test_non_utf8_env_and_yaml_name_file_and_line(tmp_path: Path):
    env = tmp_path / ".env"
    env.write_bytes(b"SEED=1\nOUTPUT_DIR=caf\xe9\n")
    with pytest.raises(ConfigError, match=r"\.env: line 2 is not valid UTF-8"):
        load(env_file=str(env))
    preset = tmp_path / "latin1.yaml"
    preset.write_bytes(b"train:\n  run_name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: line 2 is not valid UTF-8"):
        load(preset=str(preset))


def test_resume_conflict_covers_batch_and_every_data_key():
    saved = {
        "model": {"name": "tiny", "finetune": "full"},
        "grpo": {"num_generations": 4},
        "train": {"seed": 1, "questions_per_step": 2, "max_steps": 4},
        "data": {"task": "arithmetic", "seed": 42, "train_size": 50, "path": None},
    }
    same = {**saved, "train": {**saved["train"], "max_steps": 8}}  # a longer run: allowed
    assert resume_conflict(saved, same) is None
    batch = {**saved, "train": {**saved["train"], "questions_per_step": 4}}
    assert resume_conflict(saved, batch, "ckpt") == "cannot resume: train.questions_per_step was 2 in ckpt, now 4"
    questions = {**saved, "data": {**saved["data"], "train_size": 60}}
    assert "data.train_size was 50" in (resume_conflict(saved, questions) or "")
    new_key = {**saved, "data": {**saved["data"], "hf_name": "x/y"}}  # a key only the new config has
    assert "data.hf_name was None" in (resume_conflict(saved, new_key) or "")
