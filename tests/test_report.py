"""report.html: the expected sections for a short run, "not logged" for missing ones, offline-only
resources, and a real render in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from grpolab.config.schema import Config
from grpolab.observe import Tracker
from grpolab.observe.report import load_run, write_comparison, write_report


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def make_run(root: Path, name: str = "grpo", stamp: str = "2025-01-01_12-00-00", steps: int = 30) -> Path:
    """A run directory written by hand: 30 steps, an eval every 10 with two categories, samples."""
    run = root / name / stamp
    run.mkdir(parents=True)
    metrics: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        metrics.append(
            {
                "step": step,
                "time": 1e9 + step,
                "reward": 0.2 + 0.02 * step,
                "rewards/numeric/mean": 0.1 + 0.02 * step,
                "rewards/format/mean": 0.1,
                "kl": 0.001 * step,
                "entropy": 1.5 - 0.01 * step,
                "completions/mean_length": 20 + step,
                "frac_reward_zero_std": 0.5,
            }
        )
    final = {"step": steps, "final/test/accuracy": 0.65, "final/test/add/accuracy": 0.8, "final/test/mul/accuracy": 0.5}
    metrics.append(final)
    for step, acc in ((0, 0.2), (10, 0.5), (20, 0.7), (30, 0.6)):
        metrics.append(
            {
                "step": step,
                "eval/accuracy": acc,
                "eval/pass@4": acc + 0.1,
                "eval/add/accuracy": acc + 0.05,
                "eval/mul/accuracy": acc - 0.05,
                "eval/rewards/numeric/mean": acc,  # not a category, despite the shape
            }
        )
    write_jsonl(run / "metrics.jsonl", metrics)
    samples = [
        {"step": 10, "prompt": "2+3?", "completion": "<answer>5</answer>", "reward": 1.2, "advantage": 0.9,
         "rewards": {"numeric": 1.0, "format": 0.2}, "answer": "5", "category": "add"},
        {"step": 10, "prompt": "7*6?", "completion": "I think <b>41</b>", "reward": 0.0, "advantage": -0.9,
         "rewards": {"numeric": 0.0, "format": 0.0}, "answer": "42", "category": "mul"},
        {"step": 20, "messages": [{"role": "user", "content": "9*9?"}],
         "spans": [{"text": "<tool>9*9</tool>", "trained": True}, {"text": "81", "trained": False},
                   {"text": "<answer>81</answer>", "trained": True}],
         "reward": 1.0, "advantage": 0.5, "rewards": {"numeric": 1.0, "format": None}, "answer": "81",
         "category": "mul"},
    ]  # fmt: skip
    write_jsonl(run / "samples.jsonl", samples)
    (run / "config.yaml").write_text("model:\n  name: tiny\nrewards:\n- name: judge\n  api_key: '***'\n")
    status = {
        "status": "stopped_early",
        "step": 30,
        "total_steps": 100,
        "best_accuracy": 0.7,
        "best_step": 20,
        "before": {"test/accuracy": 0.25, "test/add/accuracy": 0.3},
        "after": {"test/accuracy": 0.65},
    }
    (run / "status.json").write_text(json.dumps({**status, "stop_reason": "no improvement for 1 eval"}))
    return run


def test_report_has_expected_sections(tmp_path: Path) -> None:
    page = write_report(make_run(tmp_path)).read_text()
    assert page.count("<img") == 7  # reward, per function, eval, KL, entropy, length, zero-std
    assert "not logged" not in page
    assert "Accuracy by category" in page and "<td>add</td>" in page and "<td>mul</td>" in page
    assert "<td>rewards</td>" not in page  # eval/rewards/<fn>/mean is not a category
    assert "eval @ step 0" in page and "eval @ step 30" in page  # first and last evaluation
    assert "<th>final/test @ step 30</th>" in page and "<td>0.8</td>" in page  # the exported model
    assert "<td>test/accuracy before &rarr; after</td><td>0.25 &rarr; 0.65</td>" in page
    assert "0.7 at step 20" in page and "stopped_early" in page and "no improvement" in page
    # samples: best first, worst after, HTML in completions escaped, agent spans highlighted
    assert page.index("&lt;answer&gt;5&lt;/answer&gt;") < page.index("I think &lt;b&gt;41&lt;/b&gt;")
    assert page.count("<td>best</td>") == 2 and page.count("<td>worst</td>") == 1
    assert '<span class="trained">&lt;tool&gt;9*9&lt;/tool&gt;</span><span class="env">81</span>' in page
    assert "api_key: &#x27;***&#x27;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from outside


def test_missing_metrics_say_not_logged(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [{"step": 1, "reward": 0.5}, {"step": 2, "reward": float("nan")}])
    page = write_report(run).read_text()
    assert page.count("<img") == 1
    for what in ("eval/accuracy", "kl", "entropy", "completions/mean_length", "samples.jsonl", "config.yaml"):
        assert f"not logged ({what}" in page
    assert "not logged (eval/&lt;category&gt;/accuracy)" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "<img" not in write_report(empty).read_text()  # no files at all still gives a page


def test_resumed_steps_keep_last_value_and_best_falls_back_to_max(tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    run.mkdir()
    records = [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.9}, {"step": 2, "reward": 0.2}]
    records += [{"step": 2, "eval/accuracy": 0.4}, {"step": 4, "eval/accuracy": 0.4}]
    write_jsonl(run / "metrics.jsonl", records)
    data = load_run(run)
    assert data.series("reward") == ([1, 2], [0.1, 0.2])  # the repeated step 2: the later line wins
    assert data.best_eval() == (2, 0.4)  # no status.json: the first step reaching the max


def test_comparison_overlays_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "lr-1e-6")
    b = make_run(tmp_path, "lr-3e-6", steps=20)
    page = write_comparison([a, b], tmp_path / "compare.html").read_text()
    assert page.count("<img") == 4
    assert "lr-1e-6/2025-01-01_12-00-00" in page and "lr-3e-6/2025-01-01_12-00-00" in page


def test_tracker_writes_report_at_close(tmp_path: Path) -> None:
    cfg = Config.model_validate({"logging": {"tensorboard": False, "report": True}})
    out = io.StringIO()
    tracker = Tracker(tmp_path / "run", cfg, total_steps=2, console_file=out)
    tracker.log_metrics({"reward": 0.5, "kl": 0.0}, 1)
    tracker.close({"steps": 1})
    assert (tmp_path / "run" / "report.html").is_file()
    assert "report.html" in out.getvalue().replace("\n", "").replace("│", "").replace(" ", "")


def test_report_failure_is_a_warning_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(run_dir: Path) -> Path:
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr("grpolab.observe.report.write_report", broken)
    cfg = Config.model_validate({"logging": {"tensorboard": False, "report": True}})
    out = io.StringIO()
    Tracker(tmp_path / "run", cfg, total_steps=1, console_file=out).close({})
    assert "report.html not written" in out.getvalue() and "matplotlib exploded" in out.getvalue()


# --- the page in a real browser -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
    ]
    flags += ["--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium); in CI this test must run",
)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    report = write_report(make_run(tmp_path / "outputs"))
    url = report.resolve().as_uri()
    shot = tmp_path / "report.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile-1")
    assert shot.is_file(), done.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a blank page is a few KB

    dom = chromium(["--dump-dom", url], tmp_path / "profile-2").stdout
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', dom)
    assert images == [
        "reward",
        "reward per function",
        "evaluation",
        "KL",
        "entropy",
        "completion length",
        "frac_reward_zero_std",
    ]
    assert dom.count("<table") == 3  # summary, categories, samples
    assert "Accuracy by category" in dom and "Sample completions" in dom


def cli(argv: list[str]) -> int:
    import argparse

    from grpolab.cli.observe import add_observe_parsers

    parser = argparse.ArgumentParser(prog="grpolab")
    add_observe_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "outputs")
    assert cli(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    make_run(tmp_path / "outputs", "other")
    assert cli(["report", str(tmp_path / "outputs")]) == 0  # a folder of runs: overlaid
    page = (tmp_path / "outputs" / "comparison.html").read_text()
    assert "grpo/2025-01-01_12-00-00" in page and "other/2025-01-01_12-00-00" in page
    assert cli(["report", str(run), str(tmp_path / "outputs" / "other"), "--out", str(tmp_path / "c.html")]) == 0
    assert (tmp_path / "c.html").is_file()
    assert cli(["report", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
