"""LLM-as-judge reward: a model behind an OpenAI-compatible chat API grades each completion.

Works with OpenRouter (the default), vLLM's server, or any local server that speaks
`POST {base_url}/chat/completions`. The request goes through the `openai` client when it is installed
(`pip install 'grpolab[judge]'`: its connection pooling, proxies and TLS settings), and through the
standard library otherwise (urllib), so a judge costs no extra dependency; `client=openai|stdlib`
forces one. Either way the retry policy below is ours (the openai client's own retries are off), so
both clients behave the same.

Choices, and why:
- A judge outage must never stop training: every failure (connection refused, HTTP error after
  retries, timeout, a reply without a score) becomes None for that sample, which the trainer
  excludes from the mean, plus one warning per batch with the count.
- 429 / 5xx / timeouts / dropped connections are retried with exponential backoff (Retry-After is
  honoured); other 4xx (bad key, bad model) are not, since retrying cannot fix them.
- The API key is read from the environment for each batch and never stored in an object of ours
  (the openai client that holds it lives for one batch), so it cannot leak through a repr, a log
  line, an exception message or the cache.
- The cache is one JSON file per sha256(model, prompt, completion): a resumed run, or a group with
  duplicate completions, pays once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import string
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from grpolab.config.load import redact_text

logger = logging.getLogger("grpolab.rewards")

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_RUBRIC = """You are grading a student's response against the reference answer.

Question:
{question}

Reference answer:
{answer}

Student's response:
{completion}

Is the student's final answer correct, i.e. equivalent to the reference answer? Reply with one line
"SCORE: x", where x is a number between 0 and 1 (1 = correct, 0 = wrong, in between = partly right)."""

PLACEHOLDERS = {"question", "answer", "completion"}
SCORE_RE = re.compile(r"SCORE\s*[:=]\s*\**\s*([-+]?\d*\.?\d+)", re.IGNORECASE)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class JudgeFailure(Exception):
    """One request that could not produce a score; the message never contains the API key."""


class _StatusError(Exception):
    """The server answered with an HTTP error status (either client); retried when in RETRY_STATUS."""

    def __init__(self, code: int, retry_after: str | None) -> None:
        super().__init__(f"HTTP {code}")
        self.code, self.retry_after = code, retry_after


class _Unreachable(Exception):
    """No answer at all: refused, dropped, timed out (either client); always retried."""


Post = Callable[[dict[str, Any]], str]  # request body -> the reply's message content


def resolve_client(client: str) -> Literal["openai", "stdlib"]:
    """`auto` is openai when the package is installed, else the standard library."""
    if client == "auto":
        return "openai" if importlib.util.find_spec("openai") is not None else "stdlib"
    if client == "openai" and importlib.util.find_spec("openai") is None:
        raise ValueError("client=openai but the openai package is not installed (pip install 'grpolab[judge]')")
    if client not in ("openai", "stdlib"):
        raise ValueError(f"client must be auto, openai or stdlib, got {client!r}")
    return "openai" if client == "openai" else "stdlib"


def parse_score(reply: str) -> float | None:
    """`SCORE: 0.8` (the last one wins) or a reply that is just a number; only [0, 1] counts.

    >>> [parse_score(r) for r in ("Reasoning... SCORE: 0.5", " 1 ", "SCORE: 7", "yes")]
    [0.5, 1.0, None, None]
    """
    found = SCORE_RE.findall(reply)
    text = found[-1] if found else reply.strip().rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


@dataclass(frozen=True)
class JudgeClient:
    """Settings of one judge; holds the env var's name, never the key itself."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "OPENROUTER_API_KEY"
    prompt_template: str = DEFAULT_RUBRIC
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    temperature: float = 0.0
    cache_dir: str | None = None
    client: str = "auto"

    def score_many(self, questions: list[Any], answers: list[Any], completions: list[str]) -> list[float | None]:
        """One score per completion; None where the judge could not be asked or did not answer."""
        prompts = [
            self.prompt_template.format(question=q, answer=a, completion=c)
            for q, a, c in zip(questions, answers, completions)
        ]
        keys = [self._cache_key(p, c) for p, c in zip(prompts, completions)]
        scores: dict[str, float | None] = {}
        todo: dict[str, str] = {}
        for key, prompt in zip(keys, prompts):
            cached = self._cache_get(key)
            if cached is not None:
                scores[key] = cached
            else:
                todo.setdefault(key, prompt)  # duplicate completions in a group are asked once
        failures: list[str] = []
        if todo:
            post, close = self._transport()
            try:
                with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
                    results = dict(zip(todo, pool.map(lambda prompt: self._ask(prompt, post), todo.values())))
            finally:
                close()
            for key, (score, error) in results.items():
                scores[key] = score
                if score is None:
                    failures.append(error)
                else:
                    self._cache_put(key, score)
        if failures:
            logger.warning(
                "judge %s: %d of %d requests gave no score (counted as None); last error: %s",
                self.model, len(failures), len(todo), failures[-1],
            )  # fmt: skip
        return [scores[key] for key in keys]

    def _ask(self, prompt: str, post: Post) -> tuple[float | None, str]:
        try:
            reply = self._post_with_retries(self._body(prompt), post)
        except JudgeFailure as err:
            return None, self._redact(str(err))
        except Exception as err:  # a client's surprise (its own bug, a proxy oddity): still only a None
            return None, f"{type(err).__name__}: {self._clip(str(err))}"
        score = parse_score(reply)
        return (score, "") if score is not None else (None, f"no score in reply {self._clip(reply)}")

    def _body(self, prompt: str) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": self.temperature}

    def _post_with_retries(self, body: dict[str, Any], post: Post) -> str:
        last, retry_after = "no attempt", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                return post(body)
            except _StatusError as err:
                last = str(err)
                if err.code not in RETRY_STATUS:
                    raise JudgeFailure(f"{last} (not retried)") from None
                retry_after = err.retry_after
            except _Unreachable as err:
                last = str(err)
        raise JudgeFailure(f"{last} after {self.max_retries + 1} attempts")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), 60.0)
        # Jitter spreads out a pool of workers that all hit the same 429 at once.
        return self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.9, 1.1)

    def _transport(self) -> tuple[Post, Callable[[], None]]:
        """(post, close) of the chosen client; one openai client (one connection pool) per batch."""
        if resolve_client(self.client) == "stdlib":
            return self._post_stdlib, lambda: None
        import openai

        client = openai.OpenAI(
            # read from the environment for this batch only: the client dies with the batch. A local
            # server without auth gets a placeholder (the openai client insists on a key).
            api_key=os.environ.get(self.api_key_env) or "none",
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=0,  # ours, above
        )
        return partial(_post_openai, client, self._redact), client.close

    def _post_stdlib(self, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise _StatusError(err.code, err.headers.get("Retry-After") if err.headers else None) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as err:
            raise _Unreachable(f"{type(err).__name__}: {self._redact(str(getattr(err, 'reason', err)))}") from None
        try:
            return str(json.loads(raw)["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeFailure(f"malformed response {self._clip(raw.decode('utf-8', 'replace'))}") from None

    def _redact(self, text: str) -> str:
        return redact_text(text, os.environ.get(self.api_key_env))

    def _clip(self, reply: str) -> str:
        """A server's text as it may appear in a message: redacted first, then cut (cutting first could
        leave a prefix of the key that no longer matches it)."""
        return repr(self._redact(reply)[:80])

    def _cache_key(self, prompt: str, completion: str) -> str:
        return hashlib.sha256(json.dumps([self.model, prompt, completion]).encode()).hexdigest()

    def _cache_get(self, key: str) -> float | None:
        if not self.cache_dir:
            return None
        path = Path(self.cache_dir) / key[:2] / f"{key}.json"
        try:
            value = json.loads(path.read_text())["score"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return float(value) if isinstance(value, (int, float)) else None

    def _cache_put(self, key: str, score: float) -> None:
        if not self.cache_dir:
            return
        path = Path(self.cache_dir) / key[:2] / f"{key}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"model": self.model, "score": score}))
            os.replace(tmp, path)  # atomic: a crashed run never leaves a half-written entry
        except OSError as err:
            logger.warning("judge cache %s not writable: %s", self.cache_dir, err)


def _post_openai(client: Any, redact: Callable[[str], str], body: dict[str, Any]) -> str:
    import openai

    try:
        reply = client.chat.completions.create(**body)
    except openai.APIStatusError as err:
        raise _StatusError(err.status_code, err.response.headers.get("Retry-After")) from None
    except (openai.APITimeoutError, openai.APIConnectionError) as err:
        raise _Unreachable(f"{type(err).__name__}: {redact(str(err))}") from None
    except (openai.APIError, ValueError) as err:  # a body that is not a chat completion (e.g. not JSON)
        raise JudgeFailure(f"malformed response ({type(err).__name__})") from None
    try:
        return str(reply.choices[0].message.content or "")
    except (AttributeError, IndexError, TypeError):
        raise JudgeFailure(f"malformed response {redact(str(reply))[:80]!r}") from None


def judge(
    completions: list[str],
    question: list[Any],
    answer: list[Any],
    model: str | None = None,
    base_url: str = DEFAULT_BASE_URL,
    api_key_env: str = "OPENROUTER_API_KEY",
    prompt_template: str = DEFAULT_RUBRIC,
    max_concurrency: int = 8,
    timeout_s: float = 60.0,
    max_retries: int = 3,
    backoff_s: float = 1.0,
    temperature: float = 0.0,
    cache_dir: str | None = None,
    client: str = "auto",
) -> list[float | None]:
    """An LLM behind an OpenAI-compatible API grades each completion against the reference: score in
    [0, 1]; None when the service fails or the reply has no score. client: auto (openai when
    installed, else the standard library), openai or stdlib."""
    if model is None:
        raise ValueError("judge needs a model")
    settings = JudgeClient(
        model, base_url, api_key_env, prompt_template, max_concurrency, timeout_s, max_retries, backoff_s,
        temperature, cache_dir, client,
    )  # fmt: skip
    return settings.score_many(question, answer, completions)


def check_params(params: dict[str, Any]) -> None:
    """Build-time checks of the judge's params (the model itself is checked as a required param)."""
    template = params.get("prompt_template", DEFAULT_RUBRIC)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(
            f"prompt_template is not a valid format string ({err}); write literal braces as {{{{ }}}}"
        ) from None
    unknown = fields - PLACEHOLDERS
    if unknown:
        name = sorted(unknown)[0]
        raise ValueError(f"prompt_template: unknown placeholder {{{name}}}; use {{question}} {{answer}} {{completion}}")
    if "completion" not in fields:
        raise ValueError("prompt_template must contain {completion}")
    for key, low in (("max_concurrency", 1), ("timeout_s", 1e-9), ("max_retries", 0), ("backoff_s", 0)):
        if key in params and params[key] < low:
            raise ValueError(f"{key} must be >= {low:g}, got {params[key]}")
    resolve_client(str(params.get("client", "auto")))
    if not str(params.get("base_url", DEFAULT_BASE_URL)).startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {params['base_url']!r}")
