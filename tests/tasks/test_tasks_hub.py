"""Without network, hub datasets fail within seconds with a message saying how to use data.path.

Every test here runs with sockets disabled, so none of them can download anything, even on a
machine that has network.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from grpolab.config.schema import DataConfig
from grpolab.data import DataError, build_splits, hub, validate_data


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


@pytest.mark.parametrize("task", ["gsm8k", "hf"])
def test_unreachable_hub_fails_fast_and_points_at_data_path(task: str) -> None:
    data = DataConfig(task=task, hf_name="openai/gsm8k" if task == "hf" else None)
    for check in (validate_data, lambda d: build_splits(d, 0)):
        start = time.monotonic()
        with pytest.raises(DataError, match=r"data\.path") as err:
            check(data)
        assert time.monotonic() - start < 5
        assert "HF_HUB_OFFLINE=1" in str(err.value) and "huggingface.co" in str(err.value)


def test_reachability_check_is_bounded_when_dns_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: Any, **kwargs: Any) -> None:
        time.sleep(5)  # a DNS lookup that does not answer in time; the socket timeout does not cover it
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert hub.hub_reachable(timeout=0.3) is False
    assert time.monotonic() - start < 2


def test_reachable_hub_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    class Connection:
        def close(self) -> None:
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Connection())
    assert hub.hub_reachable(timeout=1) is True


def test_offline_mode_with_empty_cache_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import datasets

    # What HF_HUB_OFFLINE=1 set before start-up gives: datasets searches its cache and nothing else.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DataError, match=r"offline mode.*data\.path"):
        build_splits(DataConfig(task="gsm8k"), 0)
    assert time.monotonic() - start < 5
    validate_data(DataConfig(task="gsm8k"))  # cache-only loading is allowed to try


def test_offline_mode_set_too_late_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError, match=r"before starting"):
        validate_data(DataConfig(task="gsm8k"))
