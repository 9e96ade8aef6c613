"""benchmarks/gpu_check.py, the GPU check, in its CPU dry run (same code, tiny sizes), so that the
script a GPU machine will run cannot rot between the times one is lent."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpolab.models.loading import resolve_source

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
from gpu_check_parts import roofline_tokens_per_s, spread  # noqa: E402


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_roofline_by_hand():
    # 1 GB of weights + 4 sequences x 1000 positions x 1 kB of KV = 1.004 GB per step at 2 TB/s -> 4 tokens
    assert roofline_tokens_per_s(4, 1e9, 1e3, 1000, 2000) == pytest.approx(4 * 2e12 / 1.004e9)
    # batch 1 with no cache to read: bandwidth / weight bytes (Qwen2.5-0.5B in bf16 on an H100 SXM: ~3.4k/s)
    assert roofline_tokens_per_s(1, 0.988e9, 0, 0, 3350) == pytest.approx(3390.7, rel=1e-4)


def test_reward_is_the_same_for_both_completion_forms_and_spreads():
    texts = ["12", "the answer is 12", "zz"]
    as_messages = [[{"role": "assistant", "content": t}] for t in texts]
    assert spread(texts) == spread(as_messages)
    assert spread(["12"]) == [(ord("1") + ord("2")) % 101 / 100]
    assert len(set(spread(texts))) == 3


def test_a_tokenizer_folder_without_files_is_one_line(tmp_path):
    out = run_check("--device", "cpu", "--tokenizer", str(tmp_path), "--parts", "decode")
    assert out.returncode != 0
    assert f"--tokenizer {tmp_path}: no tokenizer_config.json" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_cpu_dry_run_prints_every_figure(tmp_path):
    figures = tmp_path / "figures.json"
    tokenizer = resolve_source("tiny")  # always present, unlike SmolLM2's converted cache
    out = run_check("--device", "cpu", "--tokenizer", tokenizer, "--json", str(figures), "--work", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(figures.read_text())
    grpolab = result["grpolab"]
    assert math.isfinite(grpolab["step_s"]) and grpolab["step_s"] > 0
    assert 0 < grpolab["generation_s"] < grpolab["step_s"]
    assert grpolab["peak_gib"] > 0
    if importlib.util.find_spec("trl") is None:
        assert "| trl | skipped: trl is not importable" in out.stdout
    else:
        assert result["trl"]["step_s"] > 0
        assert result["step_ratio"] == pytest.approx(grpolab["step_s"] / result["trl"]["step_s"])
        assert "grpolab / TRL step time:" in out.stdout
    batches = [row["batch"] for row in result["decode"]]
    assert batches == [1, 4]  # batch 1 and B x G = 2 x 2 in the dry run
    for row in result["decode"]:
        assert 0 < row["tokens_per_s"] < row["roofline_tokens_per_s"]
    assert result["fsdp"]["fsdp_ok"], out.stdout
    assert "2 x Qwen2DecoderLayer" in result["fsdp"]["fsdp_units"]
    assert "| grpolab |" in out.stdout and "| decode batch |" in out.stdout and "FSDP2: 2 steps" in out.stdout
