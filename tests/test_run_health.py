"""A run that learns nothing does not report success; what cannot work fails before the model loads;
the exit code tells a scheduler how a run ended (issue 14 items 3, 6, 7)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from grpolab.compat.load import load_config
from grpolab.data.base import Example
from grpolab.train.health import RunHealth, UnscoredRunError
from grpolab.train.outcome import exit_code
from grpolab.train.preflight import (
    PreflightError,
    check_attention,
    check_device,
    check_judges,
    check_writable,
    prompt_lengths,
    report_long_prompts,
)


def cfg(*overrides: str):
    return load_config("quick_test", list(overrides), env_file=None, environ={})


def unscored(label: str = "numeric") -> dict[str, float]:
    # what a step logs when `label` returned None for every sample: no spread, nothing to train on
    return {f"rewards/{label}/none_frac": 1.0, "rewards/answer_format/none_frac": 0.0, "frac_reward_zero_std": 1.0}


def test_a_reward_that_scores_nothing_stops_the_run_after_n_steps():
    health = RunHealth.from_config(cfg("health.max_unscored_steps=3", "health.max_flat_steps=0"))
    health.observe(1, unscored())
    health.observe(2, {"rewards/numeric/none_frac": 0.5})  # some scored: the count starts again
    health.observe(3, unscored())
    health.observe(4, unscored())
    with pytest.raises(UnscoredRunError, match=r"reward 'numeric' returned None for every sample of steps 3-5"):
        health.observe(5, unscored())


def test_a_zero_weight_reward_may_score_nothing():
    health = RunHealth.from_config(
        cfg("health.max_unscored_steps=1", "rewards=[numeric, {name: judge, model: m, weight: 0}]")
    )
    health.observe(1, {"rewards/judge/none_frac": 1.0, "rewards/numeric/none_frac": 0.0})  # no error


def test_a_short_run_whose_reward_never_scored_is_degraded():
    # 3 steps, fewer than max_unscored_steps (5): before, this ended `finished` with reward NaN
    health = RunHealth.from_config(cfg("health.max_unscored_steps=5", "health.max_flat_steps=0"))
    for step in (1, 2, 3):
        assert health.observe(step, unscored()) is None
    assert health.final_status("finished") == "degraded"
    assert health.degraded == (
        "reward 'numeric' returned None for every sample of every step (1-3): the run learned nothing from it "
        "(an unreachable judge, an answer format no reward can read?)"
    )
    assert health.status_fields() == {"degraded": health.degraded}
    # one scored sample in one step is enough; and the check is off with the unscored one
    scored_once = RunHealth.from_config(cfg("health.max_unscored_steps=5", "health.max_flat_steps=0"))
    for step, metrics in enumerate([unscored(), {"rewards/numeric/none_frac": 0.875}, unscored()], start=1):
        scored_once.observe(step, metrics)
    assert scored_once.final_status("finished") == "finished"
    off = RunHealth.from_config(cfg("health.max_unscored_steps=0", "health.max_flat_steps=0"))
    off.observe(1, unscored())
    assert off.final_status("finished") == "finished"


def test_no_trainable_signal_for_n_steps_marks_the_run_degraded_once():
    health = RunHealth.from_config(cfg("health.max_flat_steps=2"))
    flat = {"frac_reward_zero_std": 1.0, "reward": 0.0}
    assert health.observe(1, flat) is None
    assert health.observe(2, {"frac_reward_zero_std": 0.5}) is None  # a signal: count restarts
    assert health.observe(3, flat) is None
    warning = health.observe(4, {"train/skipped_empty": 1.0})
    assert warning and "no trainable signal in steps 3-4" in warning
    assert health.observe(5, flat) is None  # said once
    assert health.final_status("finished") == "degraded" and health.final_status("interrupted") == "interrupted"
    assert health.status_fields()["degraded"].startswith("no trainable signal")


def test_exit_codes():
    assert exit_code("finished") == 0 and exit_code("stopped_early") == 0
    assert exit_code("interrupted", signal.SIGINT) == 130 and exit_code("interrupted", signal.SIGTERM) == 143
    assert exit_code("degraded") == 3 and exit_code("crashed") == 1


def test_an_unknown_attention_is_one_line():
    # before: transformers' ValueError traceback, raised inside from_pretrained after the download
    with pytest.raises(PreflightError, match=r"^model.attn_implementation: unknown attention 'banana'; use one"):
        check_attention("banana")
    for fine in (None, "sdpa", "eager", "flash_attention_2", "kernels-community/flash-attn"):
        check_attention(fine)


def test_an_unwritable_output_dir_is_one_line(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PreflightError, match=rf"train.output_dir: cannot write to {blocker}/runs"):
        check_writable(blocker / "runs", "train.output_dir")
    check_writable(tmp_path / "new" / "dir", "train.output_dir")  # created


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line():
    with pytest.raises(PreflightError, match=r"train\.device=cuda: no CUDA GPU is available"):
        check_device("cuda")
    check_device("cpu")


def judge_config(url: str, key_env: str = "GRPOLAB_TEST_JUDGE_KEY"):
    return cfg(f"rewards=[{{name: judge, model: m, base_url: '{url}', api_key_env: {key_env}}}]").rewards


def test_a_judge_without_its_key_or_endpoint_fails_before_the_model_loads():
    with pytest.raises(PreflightError, match=r"judge 'judge' needs an API key in \$GRPOLAB_TEST_JUDGE_KEY"):
        check_judges(judge_config("https://judge.example.org/v1"), environ={})
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with pytest.raises(PreflightError, match=rf"endpoint http://127.0.0.1:{port}/v1 is not reachable"):
        check_judges(judge_config(f"http://127.0.0.1:{port}/v1"), environ={})  # local: no key needed
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        check_judges(judge_config(f"http://127.0.0.1:{server.getsockname()[1]}/v1"), environ={})
    finally:
        server.close()


def test_preflight_checks_a_config_once_per_process(tmp_path: Path, monkeypatch):
    # `grpolab train` checks before importing the training stack, then the trainer it builds would
    # check again (a second judge connection): the same config passes once, a changed one is checked
    from grpolab.train import preflight as module

    calls: list[str] = []
    monkeypatch.setattr(module, "check_judges", lambda rewards: calls.append("judges"))
    first = cfg(f"train.output_dir={tmp_path / 'a'}")
    module.preflight(first)
    module.preflight(first)
    assert calls == ["judges"]
    module.preflight(cfg(f"train.output_dir={tmp_path / 'b'}"))
    assert calls == ["judges", "judges"]


def test_long_prompts_are_counted_and_reported_once(tiny_tokenizer):
    from grpolab.rollout.single_turn import full_prompt_ids

    examples = [Example("1+1", "2", "small"), Example("word " * 60, "x", "small")]
    limit = len(full_prompt_ids(tiny_tokenizer, examples[0], cfg().data)) + 5
    config = cfg(f"generation.max_prompt_length={limit}")
    warnings: list[str] = []
    lengths = prompt_lengths(tiny_tokenizer, examples, config)
    assert lengths[0] == limit - 5
    assert report_long_prompts(lengths, config, warnings.append) == 1
    assert len(warnings) == 1
    assert warnings[0].startswith(f"1 of 2 prompts are longer than generation.max_prompt_length={limit}")
    assert "beginning is cut" in warnings[0]


class FailingJudge(BaseHTTPRequestHandler):
    """Every failure a judge can give, in turn: an HTML page with status 200, HTTP 500, a well-formed
    reply without a score."""

    calls = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        FailingJudge.calls += 1
        kind = FailingJudge.calls % 3
        body = {
            0: b"<html><body>Service temporarily unavailable</body></html>",
            1: b"upstream error",
            2: json.dumps({"choices": [{"message": {"role": "assistant", "content": "Looks fine."}}]}).encode(),
        }[kind]
        self.send_response(500 if kind == 1 else 200)
        self.send_header("Content-Type", "text/html" if kind == 0 else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_three_step_run_against_a_judge_that_always_fails_ends_degraded(tmp_path: Path):
    """Before: status finished, exit code 0, reward NaN, and nothing said at the end."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    src = Path(__file__).resolve().parents[1] / "src"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "grpolab", "train", "-c", "quick_test", "train.max_steps=3", "eval.every_steps=0",
             "eval.size=4", "data.val_size=4", "data.test_size=4", "train.torch_threads=1", "logging.quiet=true",
             "logging.tensorboard=false", f"train.output_dir={tmp_path}", "health.max_flat_steps=0",
             f"rewards=[{{name: judge, model: m, base_url: '{url}', max_retries: 0}}]"],
            env={**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert FailingJudge.calls >= 3
    assert proc.returncode == 3, proc.stderr[-2000:]
    why = "reward 'judge' returned None for every sample of every step (1-3)"
    assert f"warning: run degraded: {why}" in proc.stderr
    status = json.loads(next(tmp_path.rglob("status.json")).read_text())
    assert status["status"] == "degraded" and status["degraded"].startswith(why)
