"""The LLM judge against real HTTP servers on 127.0.0.1: answers, 5xx then success, always down,
timeouts, unparsable replies, the cache, and the API key never leaking. Every server test runs
through both clients: the openai package (when installed) and the standard library."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rewards_helpers import batch

from grpolab.config.load import ConfigError
from grpolab.config.schema import Config, RewardsConfig
from grpolab.observe import Tracker
from grpolab.observe.files import TextLog
from grpolab.rewards import build_rewards
from grpolab.rewards.judge import JudgeClient, judge, parse_score, resolve_client

SECRET = "sk-test-very-secret-123"
HAS_OPENAI = importlib.util.find_spec("openai") is not None


@pytest.fixture(
    params=["stdlib", pytest.param("openai", marks=pytest.mark.skipif(not HAS_OPENAI, reason="openai not installed"))]
)
def client(request: pytest.FixtureRequest) -> str:
    """Which HTTP client the judge uses in this test."""
    return str(request.param)


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping in the timeout test must not block shutdown

    def __init__(self, mode: str, fail_first: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode, self.fail_first = mode, fail_first
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hung up on a slow handler: expected in the timeout test

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: JudgeServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            self.server.auth.append(self.headers.get("Authorization"))
            count = len(self.server.requests)
        mode = self.server.mode
        if mode == "slow":
            time.sleep(1.0)
        if mode == "down" or count <= self.server.fail_first:
            self.send_response(500 if mode != "rate" else 429)
            self.end_headers()
            return
        if mode == "unauthorized":
            self.send_response(401)
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        if mode == "garbage":
            content = "The student seems fine to me."
        elif mode == "echo_auth":  # a misbehaving server that echoes the key in a malformed reply
            self.reply(200, f"oops {self.headers.get('Authorization')}".encode())
            return
        elif mode == "echo_html":  # a proxy's HTML page (status 200) that echoes the request headers
            self.reply(200, f"<html><pre>{self.headers}</pre></html>".encode(), "text/html")
            return
        elif mode == "echo_500":  # an error page with the headers in its body
            self.reply(500, f"error; request was {self.headers}".encode(), "text/plain")
            return
        elif mode == "echo_content":  # a well-formed chat completion without a score, echoing the key
            content = f"I was called with Authorization: {self.headers.get('Authorization')}"
        else:
            content = "Looks right.\nSCORE: 1" if "<answer>42</answer>" in prompt else "SCORE: 0.25"
        self.reply(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode())

    def reply(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(mode: str, fail_first: int = 0) -> Iterator[JudgeServer]:
    server = JudgeServer(mode, fail_first)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GRPOLAB_TEST_JUDGE_KEY", SECRET)
    return "GRPOLAB_TEST_JUDGE_KEY"


def run_judge(
    server: JudgeServer, completions: list[str], client: str, env: str = "NO_SUCH_ENV", **kw: Any
) -> list[float | None]:
    params: dict[str, Any] = {"max_retries": 2, "backoff_s": 0.01, "timeout_s": 5.0, "client": client, **kw}
    return judge(completions, ["What is 6*7?"] * len(completions), ["42"] * len(completions),
                 model="judge-model", base_url=server.url, api_key_env=env, **params)  # fmt: skip


def test_answers_are_scored_and_key_is_sent(client: str, secret_env: str) -> None:
    for server in serve("ok"):
        scores = run_judge(server, ["<answer>42</answer>", "<answer>41</answer>"], client, env=secret_env)
        assert scores == [1.0, 0.25]
        assert server.auth == [f"Bearer {SECRET}"] * 2
        assert server.requests[0]["model"] == "judge-model"
        assert "What is 6*7?" in server.requests[0]["messages"][0]["content"]


def test_duplicates_in_a_batch_are_asked_once(client: str) -> None:
    for server in serve("ok"):
        assert run_judge(server, ["<answer>42</answer>"] * 4, client) == [1.0] * 4
        assert len(server.requests) == 1


@pytest.mark.parametrize("mode", ["fail", "rate"])
def test_500_or_429_then_success_after_retries(client: str, mode: str) -> None:
    # the first two requests fail (500 or 429), the third answers: max_retries=2 is just enough
    for server in serve(mode, fail_first=2):
        assert run_judge(server, ["<answer>42</answer>"], client) == [1.0]
        assert len(server.requests) == 3


def test_always_down_gives_none_and_a_counted_warning(client: str, caplog: pytest.LogCaptureFixture) -> None:
    for server in serve("down"):
        with caplog.at_level(logging.WARNING, logger="grpolab.rewards"):
            assert run_judge(server, ["a", "b"], client) == [None, None]
        assert len(server.requests) == 2 * 3  # 1 try + 2 retries each
        assert "2 of 2 requests gave no score" in caplog.text and "HTTP 500 after 3 attempts" in caplog.text


def test_connection_refused_gives_none(client: str) -> None:
    judge_client = JudgeClient("m", base_url="http://127.0.0.1:9/v1", client=client, max_retries=1, backoff_s=0.01)
    assert judge_client.score_many(["q"], ["42"], ["x"]) == [None]


def test_timeout_gives_none_quickly(client: str) -> None:
    for server in serve("slow"):
        start = time.perf_counter()
        assert run_judge(server, ["x"], client, timeout_s=0.2, max_retries=1) == [None]
        # two attempts of 0.2 s plus a 0.01 s backoff; the server would have taken 1 s each
        assert time.perf_counter() - start < 0.9


def test_unparsable_reply_gives_none_without_retry(client: str) -> None:
    for server in serve("garbage"):
        assert run_judge(server, ["x"], client) == [None]
        assert len(server.requests) == 1


def test_401_is_not_retried(client: str) -> None:
    for server in serve("unauthorized"):
        assert run_judge(server, ["x"], client) == [None]
        assert len(server.requests) == 1


def test_cache_avoids_a_second_request(client: str, tmp_path: Path, secret_env: str) -> None:
    for server in serve("ok"):
        first = run_judge(server, ["<answer>42</answer>", "no"], client, env=secret_env, cache_dir=str(tmp_path))
        second = run_judge(server, ["<answer>42</answer>", "no"], client, env=secret_env, cache_dir=str(tmp_path))
        assert first == second == [1.0, 0.25]
        assert len(server.requests) == 2  # the second call was served from disk
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 2 and all(SECRET not in f.read_text() for f in files)
    # another model is another key: it must ask again (no server now -> None)
    other = JudgeClient(
        "other-model", base_url="http://127.0.0.1:9/v1", client=client, max_retries=0, cache_dir=str(tmp_path)
    )
    assert other.score_many(["What is 6*7?"], ["42"], ["<answer>42</answer>"]) == [None]


def test_failures_are_not_cached(client: str, tmp_path: Path) -> None:
    for server in serve("garbage"):
        run_judge(server, ["x"], client, cache_dir=str(tmp_path))
        run_judge(server, ["x"], client, cache_dir=str(tmp_path))
        assert len(server.requests) == 2 and not list(tmp_path.rglob("*.json"))


def test_key_never_leaks(client: str, secret_env: str, caplog: pytest.LogCaptureFixture) -> None:
    for server in serve("echo_auth"):
        with caplog.at_level(logging.DEBUG):
            assert run_judge(server, ["x"], client, env=secret_env) == [None]
        assert "malformed response" in caplog.text and SECRET not in caplog.text
    rewards = build_rewards(RewardsConfig.model_validate([{"name": "judge", "model": "m", "api_key_env": secret_env}]))
    assert SECRET not in repr(rewards) + repr(rewards.rewards) + repr(JudgeClient("m", api_key_env=secret_env))


@pytest.mark.parametrize("mode", ["echo_auth", "echo_html", "echo_500", "echo_content"])
def test_an_echoing_server_never_gets_the_key_into_logs(
    client: str, mode: str, secret_env: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each reply path (malformed body, HTML page, error page, a reply without a score) with the
    Authorization header echoed back: the key reaches neither the warning, nor train.log (through the
    tracker, as in a run), nor an exception. Before the fix, "no score in reply" logged it verbatim."""
    cfg = Config.model_validate({"logging": {"tensorboard": False, "report": False, "quiet": True}})
    console = io.StringIO()
    tracker = Tracker(tmp_path / "run", cfg, total_steps=1, console_file=console)
    try:
        for server in serve(mode):
            with caplog.at_level(logging.DEBUG):
                assert run_judge(server, ["x", "y"], client, env=secret_env, max_retries=1) == [None, None]
            assert all(auth == f"Bearer {SECRET}" for auth in server.auth)  # the key was sent, and echoed
    finally:
        tracker.close({})
    assert "gave no score" in caplog.text and SECRET not in caplog.text
    log = (tmp_path / "run" / "train.log").read_text()
    assert "gave no score" in log and SECRET not in log
    assert SECRET[:12] not in caplog.text + log  # no prefix either (a cut before redaction would leave one)
    assert "gave no score" in console.getvalue() and SECRET not in console.getvalue()


def test_train_log_redacts_secret_environment_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # whatever writes it (a user reward's exception, a library's message), train.log never holds the
    # value of an environment variable named like a secret
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-abcdefgh-1234")
    monkeypatch.setenv("SHORT_KEY", "ab")  # too short to redact without blanking ordinary words
    log = TextLog(tmp_path / "train.log")
    log.line("WARNING", "reward 'mine' raised: ValueError('auth tok-abcdefgh-1234 rejected'), ab")
    log.close()
    expected = "WARNING reward 'mine' raised: ValueError('auth *** rejected'), ab\n"
    assert (tmp_path / "train.log").read_text().endswith(expected)


def test_judge_in_a_reward_set_never_raises(client: str) -> None:
    for server in serve("down"):
        spec = {
            "name": "judge",
            "model": "m",
            "base_url": server.url,
            "max_retries": 0,
            "api_key_env": "NONE",
            "client": client,
        }
        rewards = build_rewards(RewardsConfig.model_validate(["numeric", spec]))
        scores = rewards.score(batch(["<answer>42</answer>"]))
        assert scores.per_function == {"numeric": [1.0], "judge": [None]} and scores.total == [1.0]
        assert scores.metrics()["rewards/judge/none_frac"] == 1.0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("SCORE: 0.8", 0.8),  # the asked-for form
        ("score = 1", 1.0),  # case and '=' tolerated
        ("SCORE: **0.5**", 0.5),  # markdown bold
        ("SCORE: 0.2\nwait, SCORE: 0.9", 0.9),  # the last one wins
        ("0", 0.0),  # a bare number
        ("1.", 1.0),  # a bare number with a full stop
        ("SCORE: 1.5", None),  # out of [0, 1]
        ("SCORE: -0.1", None),  # negative
        ("I would say 0.7", None),  # a number inside prose is not a score
        ("", None),  # empty reply
    ],
)
def test_parse_score(reply: str, expected: float | None) -> None:
    assert parse_score(reply) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "param 'model' is required"),
        ({"model": "m", "prompt_template": "{question} {foo} {completion}"}, "unknown placeholder {foo}"),
        ({"model": "m", "prompt_template": "grade {question}"}, "must contain {completion}"),
        ({"model": "m", "prompt_template": "{completion"}, "not a valid format string"),
        ({"model": "m", "max_concurrency": 0}, "max_concurrency must be >= 1"),
        ({"model": "m", "base_url": "localhost:8000"}, "base_url must start with http"),
        ({"model": "m", "api_key": "sk-..."}, "unknown param 'api_key'; did you mean 'api_key_env'?"),
    ],
)
def test_judge_build_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("(", r"\(")):
        build_rewards(RewardsConfig.model_validate([{"name": "judge", **params}]))


def test_auto_means_openai_when_installed() -> None:
    assert resolve_client("auto") == ("openai" if HAS_OPENAI else "stdlib")
    assert resolve_client("stdlib") == "stdlib"


def test_an_unknown_client_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="client must be auto, openai or stdlib"):
        build_rewards(RewardsConfig.model_validate([{"name": "judge", "model": "m", "client": "requests"}]))
