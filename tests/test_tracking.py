"""Tracker: every sink receives the expected keys; optional sinks fail soft; status.json tells the story."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from grpolab.config.schema import Config
from grpolab.observe import Tracker, read_jsonl, read_status


def make_cfg(**logging_cfg: Any) -> Config:
    settings = {"tensorboard": False, "report": False, **logging_cfg}
    return Config.model_validate(
        {
            "logging": settings,
            # a secret inside reward params must not reach config.yaml
            "rewards": [{"name": "numeric"}, {"name": "judge", "api_key": "sk-very-secret"}],
        }
    )


SAMPLE = {
    "prompt": "What is 2+3?",
    "completion": "<answer>5</answer>",
    "rewards": {"numeric": 1.0, "format": None},
    "reward": 1.0,
    "advantage": 0.5,
    "answer": "5",
    "category": "add",
}
AGENT_SAMPLE = {
    "messages": [{"role": "user", "content": "2+3?"}],
    "spans": [
        {"text": "<tool>2+3</tool>", "trained": True},
        {"text": "RESULT 5", "trained": False},
        {"text": "<answer>5</answer>", "trained": True},
    ],
    "rewards": {"numeric": 1.0},
    "reward": 1.0,
    "advantage": 0.0,
    "answer": "5",
    "category": "add",
}


def run_short(tracker: Tracker) -> None:
    tracker.info("loading model")
    for step in range(1, 5):
        tracker.log_metrics({"reward": 0.1 * step, "kl": 0.01, "loss/policy": float("nan")}, step)
        tracker.advance(step)
    tracker.log_samples([SAMPLE, AGENT_SAMPLE], step=4)
    tracker.log_eval({"eval/accuracy": 0.5, "eval/pass@4": 0.75, "eval/add/accuracy": 0.6}, 4, "eval")
    tracker.warning("something odd")
    tracker.close({"status": "finished", "steps": 4, "best_accuracy": 0.5, "best_step": 4})


def test_files_receive_expected_keys(tmp_path: Path) -> None:
    out = io.StringIO()
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir, make_cfg(), total_steps=4, console_file=out)
    run_short(tracker)

    config_text = (run_dir / "config.yaml").read_text()
    assert "sk-very-secret" not in config_text and "***" in config_text

    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 4]
    assert {"step", "time", "reward", "kl", "loss/policy"} <= metrics[0].keys()
    assert metrics[0]["loss/policy"] is None  # NaN is not JSON: written as null
    assert metrics[-1]["eval/accuracy"] == 0.5 and metrics[-1]["eval/add/accuracy"] == 0.6

    samples = list(read_jsonl(run_dir / "samples.jsonl"))
    assert len(samples) == 2
    assert samples[0]["step"] == 4 and samples[0]["rewards"] == {"numeric": 1.0, "format": None}
    assert samples[1]["spans"][1] == {"text": "RESULT 5", "trained": False}

    log = (run_dir / "train.log").read_text()
    assert "loading model" in log and "WARNING" in log and "something odd" in log
    assert "pass@4" in log and "add" in log  # the eval tables, as plain text
    assert "run summary" in log and "best accuracy" in log
    assert "\x1b[" not in log and "\r" not in log  # no colour codes, no redrawn progress bar

    status = read_status(run_dir)
    assert status["status"] == "finished" and status["step"] == 4
    assert status["best_accuracy"] == 0.5 and status["best_step"] == 4
    assert isinstance(status["pid"], int) and status["updated"] >= status["started"]

    console = out.getvalue()
    assert "loading model" in console and "something odd" in console and "run summary" in console
    assert "step 4/4" in console  # without a terminal the bar becomes status lines
    assert "<tool>" not in console  # samples are printed only in verbose mode


def test_tensorboard_gets_scalars_and_text(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run_short(Tracker(run_dir, make_cfg(tensorboard=True), total_steps=4, console_file=io.StringIO()))
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    # TRL's dashboard names: training metrics under train/, evaluations under eval/
    assert {"train/reward", "train/kl", "train/loss/policy", "eval/accuracy", "eval/pass@4"} <= set(scalars)
    assert not {"reward", "kl", "train/eval/accuracy"} & set(scalars)
    assert [e.step for e in acc.Scalars("train/reward")] == [1, 2, 3, 4]
    assert any("samples" in tag for tag in acc.Tags()["tensors"])  # add_text is stored as a tensor


def test_quiet_prints_only_warnings_and_summary(tmp_path: Path) -> None:
    out = io.StringIO()
    run_short(Tracker(tmp_path / "run", make_cfg(quiet=True), total_steps=4, console_file=out))
    console = out.getvalue()
    assert "something odd" in console and "run summary" in console
    assert "loading model" not in console and "step 4/4" not in console and "pass@4" not in console
    assert "loading model" in (tmp_path / "run" / "train.log").read_text()  # the log keeps everything


def test_verbose_prints_samples_with_spans(tmp_path: Path) -> None:
    out = io.StringIO()
    run_short(Tracker(tmp_path / "run", make_cfg(verbose=True), total_steps=4, console_file=out))
    console = out.getvalue()
    assert "<answer>5</answer>" in console and "<tool>2+3</tool>" in console and "RESULT 5" in console
    assert "numeric=1" in console and "reward 1" in console


def test_crash_inside_context_marks_run_crashed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with (
        pytest.raises(RuntimeError),
        Tracker(run_dir, make_cfg(), total_steps=10, console_file=io.StringIO()) as t,
    ):
        t.log_metrics({"reward": 1.0}, 1)
        raise RuntimeError("CUDA out of memory")
    status = read_status(run_dir)
    assert status["status"] == "crashed" and "CUDA out of memory" in status["stop_reason"]
    with pytest.raises(ValueError, match="status must be one of"):
        Tracker(tmp_path / "other", make_cfg(), total_steps=1, console_file=io.StringIO()).set_status("done")


def test_resume_appends_and_keeps_best(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = Tracker(run_dir, make_cfg(), total_steps=4, console_file=io.StringIO())
    first.log_metrics({"reward": 0.1}, 1)
    first.set_status("running", best_accuracy=0.4, best_step=1)
    started = first.status["started"]
    first.close({"status": "interrupted"})
    second = Tracker(run_dir, make_cfg(), total_steps=4, console_file=io.StringIO())
    assert second.status["status"] == "running" and second.status["best_accuracy"] == 0.4
    assert second.status["started"] == started
    second.log_metrics({"reward": 0.2}, 2)
    second.close({})
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
    assert read_status(run_dir)["status"] == "finished"


def test_library_warnings_reach_train_log(tmp_path: Path) -> None:
    out = io.StringIO()
    tracker = Tracker(tmp_path / "run", make_cfg(), total_steps=1, console_file=out)
    logging.getLogger("grpolab.rewards").warning("reward 'judge' failed: timeout")
    tracker.close({})
    logging.getLogger("grpolab.rewards").warning("after close: not ours any more")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "reward 'judge' failed: timeout" in log and "after close" not in log


def test_wandb_missing_warns_once_and_training_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    out = io.StringIO()
    run_short(Tracker(tmp_path / "run", make_cfg(wandb=True), total_steps=4, console_file=out))
    assert out.getvalue().count("wandb is not installed") == 1
    assert len(list(read_jsonl(tmp_path / "run" / "metrics.jsonl"))) == 5


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    return wandb


def test_wandb_offline_writes_its_files(tmp_path: Path, wandb_offline: Any) -> None:
    run_dir = tmp_path / "run"
    cfg = make_cfg(wandb=True, wandb_project="grpolab-test", wandb_tags=["ci"])
    tracker = Tracker(run_dir, cfg, total_steps=4, console_file=io.StringIO())
    run_id = tracker.status["wandb_id"]
    run_short(tracker)
    offline = list((tmp_path / "wandb_dir" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((tmp_path / "wandb_dir").rglob("*"))
    assert list(offline[0].glob("run-*.wandb")), "the offline run has its data file"
    assert read_status(run_dir)["wandb_id"] == run_id


def test_wandb_init_failure_does_not_stop_training(
    tmp_path: Path, wandb_offline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise wandb_offline.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb_offline, "init", refuse)
    out = io.StringIO()
    run_short(Tracker(tmp_path / "run", make_cfg(wandb=True), total_steps=4, console_file=out))
    assert out.getvalue().count("W&B init failed") == 1
    metrics = list(read_jsonl(tmp_path / "run" / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 4]
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "finished"


def test_summary_shows_before_and_after(tmp_path: Path) -> None:
    out = io.StringIO()
    tracker = Tracker(tmp_path / "run", make_cfg(), total_steps=2, console_file=out)
    before = {"test/accuracy": 0.2, "test/add/accuracy": 0.1}
    after = {"test/accuracy": 0.6, "test/add/accuracy": 0.7}
    tracker.close({"status": "stopped_early", "stop_reason": "patience", "before": before, "after": after})
    console = out.getvalue()
    assert "test/accuracy" in console and "0.2 -> 0.6" in console
    assert "test/add/accuracy" not in console  # categories belong to the report
    assert read_status(tmp_path / "run")["after"] == after


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    from rich.console import Console

    out = io.StringIO()
    tracker = Tracker(tmp_path / "run", make_cfg(), total_steps=3)
    tracker.view.console = Console(file=out, force_terminal=True, width=150)
    for step in (1, 2, 3):
        tracker.log_metrics({"reward": 0.5, "kl": 0.02, "eval/accuracy": 0.25}, step)
        tracker.advance(step)
    tracker.close({})
    console = out.getvalue()
    assert "3/3" in console and "ETA" in console and "step/s" in console
    assert "reward 0.5" in console and "acc 0.25" in console and "kl 0.02" in console
    assert "\r" not in (tmp_path / "run" / "train.log").read_text()


def test_wandb_log_failure_mid_run_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in wandb module whose run.log fails (a dropped connection): one warning, files go on."""
    import types

    class FlakyRun:
        id = "abc123"

        def __init__(self) -> None:
            self.summary: dict[str, Any] = {}

        def log(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("connection reset by peer")

        def finish(self, exit_code: int = 0) -> None:
            pass

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: FlakyRun()  # type: ignore[attr-defined]
    fake.Settings = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    fake.Table = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = io.StringIO()
    run_short(Tracker(tmp_path / "run", make_cfg(wandb=True), total_steps=4, console_file=out))
    assert out.getvalue().count("connection reset by peer") == 1
    assert len(list(read_jsonl(tmp_path / "run" / "metrics.jsonl"))) == 5
    assert read_status(tmp_path / "run")["wandb_id"] == "abc123"


def test_wandb_gets_trls_names_and_global_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in wandb module that records what is logged: TRL's keys, metrics.jsonl keeps ours."""
    import types

    logged: list[tuple[dict[str, Any], int]] = []

    class RecordingRun:
        id = "rec1"

        def __init__(self) -> None:
            self.summary: dict[str, Any] = {}

        def log(self, data: dict[str, Any], step: int) -> None:
            logged.append((data, step))

        def finish(self, exit_code: int = 0) -> None:
            pass

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: RecordingRun()  # type: ignore[attr-defined]
    fake.Settings = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    fake.Table = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run_short(Tracker(tmp_path / "run", make_cfg(wandb=True), total_steps=4, console_file=io.StringIO()))
    scalars = [(data, step) for data, step in logged if "samples" not in data]
    first, step = scalars[0]
    assert step == 1 and first["train/global_step"] == 1 and first["train/reward"] == pytest.approx(0.1)
    assert "reward" not in first and "train/kl" in first
    assert any("eval/accuracy" in data and "train/eval/accuracy" not in data for data, _ in scalars)
    assert "reward" in next(read_jsonl(tmp_path / "run" / "metrics.jsonl"))  # the file keeps bare names
