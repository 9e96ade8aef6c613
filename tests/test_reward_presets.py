"""Presets run offline on the tiny model (GSM8K-style presets with a small GSM8K-format file of our own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpolab.cli.main import main
from run_helpers import read_metrics

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "gsm8k_style.jsonl"  # GSM8K format, our own word problems


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("gsm8k_lora", ["match_format_exactly", "match_format_approximately", "check_answer", "check_numbers"]),
        ("openr1_rewards", ["accuracy", "format", "reasoning_steps", "cosine_scaled", "repetition_penalty", "length"]),
    ],
)
def test_reward_preset_runs_offline_on_the_tiny_model(tmp_path, preset, expected):
    code = main(
        [
            "train", "-c", preset, "model=tiny", f"data.path={DATA}", "+experiment=quick_test",
            "train.max_steps=1", "eval.size=4", "data.val_size=4", "data.test_size=4", "data.train_size=20",
            "generation.max_new_tokens=16", "logging.quiet=true", f"train.output_dir={tmp_path}",
        ]
    )  # fmt: skip
    assert code == 0
    (metrics_file,) = tmp_path.glob("*/*/metrics.jsonl")
    train_row = next(r for r in read_metrics(metrics_file.parent) if "loss" in r)
    for name in expected:
        assert f"rewards/{name}/mean" in train_row or f"rewards/{name}/none_frac" in train_row, name


@pytest.mark.parametrize("preset", ["small_numbers", "mixed", "eval_test_improved", "quick_test"])
def test_offline_presets_run(tmp_path, preset):
    code = main(
        [
            "train", "-c", preset, "+experiment=quick_test", "train.max_steps=1", "train.epochs=0",
            "logging.quiet=true", f"train.output_dir={tmp_path}",
        ]
    )  # fmt: skip
    assert code == 0
    (metrics_file,) = tmp_path.glob("*/*/metrics.jsonl")
    rows = read_metrics(metrics_file.parent)
    assert any("loss" in r for r in rows) and any("eval/accuracy" in r for r in rows)
    if preset == "eval_test_improved":  # pass@k and the lenient rewards are wired in
        assert any("eval/pass@5" in r for r in rows)
        assert any("rewards/hard_format/mean" in r for r in rows)
