"""A real model never silently inherits the tiny model's settings; the real-model presets carry real
settings; the hub is checked through huggingface_hub (offline mode, HF_ENDPOINT), not a raw socket."""

from __future__ import annotations

import time

import pytest

from grpolab.compat.load import load_config
from grpolab.config.model_defaults import tiny_settings_warning
from grpolab.models.loading import ModelLoadError, ensure_reachable

GPU_PRESETS = ["qwen2.5_0.5b_gpu", "qwen2.5_1.5b_gpu", "gemma3_270m_gpu", "gemma3_1b_gpu", "qwen3_1.7b_gpu"]


def load(preset, *overrides):
    return load_config(preset, list(overrides), env_file=None, environ={})


def test_a_hub_model_on_the_default_preset_is_warned_with_the_values():
    warning = tiny_settings_warning(load("default", "model.name=Qwen/Qwen2.5-0.5B-Instruct"))
    assert warning is not None
    for named in ("optim.lr=0.0005", "generation.max_new_tokens=24", "data.system_prompt=''", "temperature=1.2"):
        assert named in warning
    assert tiny_settings_warning(load("default")) is None  # the tiny model is what they are tuned for
    assert tiny_settings_warning(load("default", "model.name=x", "optim.lr=1e-6", "generation.max_new_tokens=256",
                                      "data.system_prompt=null", "generation.temperature=1.0")) is None  # fmt: skip


@pytest.mark.parametrize("preset", ["smollm2_cpu", *GPU_PRESETS])
def test_real_model_presets_have_real_model_settings(preset):
    cfg = load(preset)
    assert tiny_settings_warning(cfg) is None
    assert cfg.model.name not in ("tiny", "tiny-agent")
    assert cfg.data.system_prompt != ""  # a reasoning prompt (gsm8k's default when None)
    if preset.endswith("_gpu"):
        assert cfg.generation.max_new_tokens >= 256 and cfg.model.dtype == "bfloat16"
        assert cfg.model.finetune == "lora" and cfg.optim.lr == 2e-5
    else:
        assert cfg.train.questions_per_step == 8 and cfg.grpo.num_generations <= 8


def test_offline_mode_fails_in_one_line_naming_the_model(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="'nobody/nothing-here' is not in the local cache and HF_HUB_OFFLINE"):
        ensure_reachable("nobody/nothing-here")


def test_unreachable_endpoint_fails_fast_through_huggingface_hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # HF_ENDPOINT, pointed at a closed port
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face hub to download 'nobody/nothing-here'"):
        ensure_reachable("nobody/nothing-here")
    assert time.perf_counter() - started < 30
