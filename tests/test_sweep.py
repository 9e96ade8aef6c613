"""Sweeps: the grid, a results table with one row per run, a failed run as a row (not an abort)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from grpolab.cli.sweep import combo_name, parse_grid, run_sweep, split_values
from grpolab.config.load import ConfigError


def test_parse_grid_is_the_cartesian_product() -> None:
    grid = parse_grid(["optim.lr=1e-6,3e-6,1e-5", "train.seed=1,2"])
    assert len(grid) == 6
    assert grid[0] == {"optim.lr": "1e-6", "train.seed": "1"}
    assert grid[1] == {"optim.lr": "1e-6", "train.seed": "2"}  # the last key varies fastest
    assert grid[-1] == {"optim.lr": "1e-5", "train.seed": "2"}
    assert parse_grid(["eval.pass_k=[1,4],[1,8]"]) == [{"eval.pass_k": "[1,4]"}, {"eval.pass_k": "[1,8]"}]
    assert split_values("{a: 1, b: 2},'x,y'") == ["{a: 1, b: 2}", "'x,y'"]
    assert parse_grid([]) == [{}]  # no grid: one run with the fixed overrides
    for bad in (["optim.lr"], ["optim.lr=1e-6,"], ["train.seed=1", "train.seed=2"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_combo_name_is_a_safe_folder_name() -> None:
    assert combo_name(3, {"optim.lr": "1e-05", "train.seed": "2"}) == "03_lr=1e-05_seed=2"
    assert "/" not in combo_name(0, {"data.path": "/tmp/x y.jsonl"})


class FakeTraining:
    """Stands in for run_training: accuracy grows with the learning rate; seed 13 crashes."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], Path]] = []

    def __call__(self, overrides: list[str], out_dir: Path) -> dict[str, Any]:
        self.calls.append((overrides, out_dir))
        values = dict(item.split("=", 1) for item in overrides)
        if values.get("train.seed") == "13":
            raise RuntimeError("CUDA error: device-side assert | at step 3")
        lr = float(values["optim.lr"])
        return {
            "status": "finished",
            "best_accuracy": lr * 1e5,
            "best_step": 10,
            "final_reward": 0.5,
            "seconds": 2.0,
        }


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_by_one_sweep_gives_a_two_row_table(tmp_path: Path) -> None:
    fake = FakeTraining()
    rows = run_sweep(None, ["train.max_steps=5"], ["lr=1e-6,3e-6", "seed=1"], tmp_path / "sweep", fake)
    assert [row["status"] for row in rows] == ["finished", "finished"]
    # short keys reach the trainer as full dotted overrides, after the fixed ones
    assert fake.calls[0][0] == ["train.max_steps=5", "optim.lr=1e-6", "train.seed=1"]
    assert [out.name for _, out in fake.calls] == ["00_lr=1e-6_seed=1", "01_lr=3e-6_seed=1"]
    assert all(out.is_dir() and out.parent == tmp_path / "sweep" for _, out in fake.calls)

    table = (tmp_path / "sweep" / "results.md").read_text().splitlines()
    assert table[0].startswith("| lr | seed | best eval accuracy | best step | final reward | time (s) | status")
    body = [line for line in table[2:] if line.startswith("|")]
    assert len(body) == 2 and body[0].startswith("| 1e-6 | 1 | 0.1 | 10 | 0.5 | 2 | finished")
    assert "Best: lr=3e-6, seed=1 (eval accuracy 0.3)" in table[-1]
    assert [r["lr"] for r in read_csv(tmp_path / "sweep" / "results.csv")] == ["1e-6", "3e-6"]


def test_a_failed_run_is_a_row_and_the_sweep_goes_on(tmp_path: Path) -> None:
    fake = FakeTraining()
    seen: list[dict[str, Any]] = []
    rows = run_sweep(None, [], ["optim.lr=1e-6", "train.seed=13,2"], tmp_path, fake, on_result=seen.append)
    assert len(fake.calls) == 2 and seen == rows
    assert rows[0]["status"] == "failed: RuntimeError: CUDA error: device-side assert | at step 3"
    assert rows[1]["status"] == "finished" and rows[1]["best_accuracy"] == pytest.approx(0.1)
    assert "device-side assert" in (tmp_path / "00_lr=1e-6_seed=13" / "error.txt").read_text()
    table = (tmp_path / "results.md").read_text()
    assert "failed: RuntimeError: CUDA error: device-side assert \\| at step 3" in table  # pipe escaped
    csv_rows = read_csv(tmp_path / "results.csv")
    assert csv_rows[0]["status"].startswith("failed") and float(csv_rows[1]["best_accuracy"]) == pytest.approx(0.1)


def test_a_bad_grid_value_fails_before_any_run(tmp_path: Path) -> None:
    fake = FakeTraining()
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        run_sweep(None, [], ["optim.lr=1e-6,-1"], tmp_path, fake)
    with pytest.raises(ConfigError, match=r"did you mean 'optim\.lr'"):
        run_sweep(None, [], ["optim.lrr=1e-6"], tmp_path, fake)
    with pytest.raises(ConfigError, match="ambiguous"):
        run_sweep(None, [], ["temperature=0.7,1.0"], tmp_path, fake)
    assert fake.calls == []


@pytest.mark.slow
def test_two_by_one_sweep_on_the_tiny_model(tmp_path: Path) -> None:
    tiny = ["train.max_steps=1", "train.questions_per_step=2", "grpo.num_generations=2", "data.train_size=8"]
    tiny += ["eval.size=2", "eval.every_steps=0", "generation.max_new_tokens=8", "train.device=cpu"]
    tiny += ["logging.tensorboard=false", "logging.report=false", "logging.quiet=true"]
    tiny += [f"journal.path={tmp_path / 'JOURNAL.md'}"]
    rows = run_sweep(None, tiny, ["optim.lr=1e-5,1e-4", "train.seed=1"], tmp_path / "sweep")
    assert len(rows) == 2 and all(not str(row["status"]).startswith("failed") for row in rows), rows
    body = [line for line in (tmp_path / "sweep" / "results.md").read_text().splitlines()[2:] if line[:1] == "|"]
    assert len(body) == 2
    journal = (tmp_path / "JOURNAL.md").read_text()  # one entry per run, each with its own command
    assert journal.count("### grpo - ") == 2 and "optim.lr=1e-5 train.seed=1`" in journal


def test_sweep_command_splits_grid_and_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from grpolab.cli.observe import add_observe_parsers

    fake = FakeTraining()
    monkeypatch.setattr(
        "grpolab.cli.sweep.default_run_one", lambda overrides, out_dir, preset: fake(overrides, out_dir)
    )
    parser = argparse.ArgumentParser(prog="grpolab")
    add_observe_parsers(parser.add_subparsers(dest="command", required=True))
    argv = ["sweep", "--sweep-dir", str(tmp_path), "lr=1e-6,3e-6", "--", "train.max_steps=3"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert [overrides for overrides, _ in fake.calls] == [
        ["train.max_steps=3", "optim.lr=1e-6"],
        ["train.max_steps=3", "optim.lr=3e-6"],
    ]
    assert "| lr | best eval accuracy" in capsys.readouterr().out
    args = parser.parse_args(["sweep", "--sweep-dir", str(tmp_path / "b"), "train.seed=13,1"])
    assert args.func(args) == 1  # one run failed: the sweep finishes, the exit code says so


def test_split_grid_overrides_for_multirun() -> None:
    from grpolab.cli.sweep import split_grid_overrides

    fixed, grid = split_grid_overrides(["lr=1e-6,3e-6", "eval.pass_k=[1,5]", "seed=1", "eval.pass_k=[1],[1,4]"])
    assert fixed == ["eval.pass_k=[1,5]", "seed=1"] and grid == ["lr=1e-6,3e-6", "eval.pass_k=[1],[1,4]"]
