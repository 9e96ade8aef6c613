"""generation.vllm_kv_cache_gib=auto: the colocated vLLM engine's CPU KV cache sized to what the run's
generate calls can fill, checked against hand-computed byte counts (no engine started here)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from grpolab.compat.load import load_config
from grpolab.config.load import ConfigError
from grpolab.rollout.generators import KV_CACHE_AUTO_MAX_GIB, engine_kv_cache_gib, kv_bytes_per_token

GIB = 2**30
# 2 layers x 2 KV heads x head_dim 16 (64 / 4 heads), a key and a value: 128 numbers a token
SMALL = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64)


def cfg(*overrides: str):
    base = ["train.questions_per_step=4", "grpo.num_generations=8", "eval.batch_size=16",
            "generation.max_new_tokens=32", "generation.max_prompt_length=512"]  # fmt: skip
    return load_config("quick_test", base + list(overrides), env_file=None, environ={})


def test_bytes_per_token_count_keys_and_values_of_every_layer_and_kv_head():
    assert kv_bytes_per_token(SMALL, torch.float32) == 2 * 2 * 2 * 16 * 4 == 512
    assert kv_bytes_per_token(SMALL, torch.bfloat16) == 256
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 -> 46,080 bytes a token in float32
    smol = LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    assert kv_bytes_per_token(smol, torch.float32) == 46_080


def test_auto_holds_every_sequence_of_the_largest_call_at_its_longest():
    # training call: 4 x 8 = 32 sequences (eval 16 x 1 is smaller); each the longest prompt (40) plus
    # 32 generated, plus a 128-token block of rounding
    assert engine_kv_cache_gib(cfg(), SMALL, torch.float32, longest_prompt=40) * GIB == 32 * (40 + 32 + 128) * 512
    # prompt lengths unknown: the prompt limit stands in
    assert engine_kv_cache_gib(cfg(), SMALL, torch.float32) * GIB == 32 * (512 + 32 + 128) * 512
    # a prompt past the limit is cut to it
    assert engine_kv_cache_gib(cfg(), SMALL, torch.float32, 900) == engine_kv_cache_gib(cfg(), SMALL, torch.float32)


def test_auto_counts_evaluation_samples_when_that_call_is_larger():
    # pass@4 with 16 questions a call: 64 sequences > 32
    sized = engine_kv_cache_gib(cfg("eval.pass_k=[4]"), SMALL, torch.float32, longest_prompt=40)
    assert sized * GIB == 64 * (40 + 32 + 128) * 512


def test_auto_keeps_room_for_one_full_length_sequence():
    one = cfg("train.questions_per_step=1", "grpo.num_generations=2", "eval.batch_size=1")
    # 2 x (10 + 32 + 128) = 340 tokens < 512 + 32 + 128: vLLM would refuse to start below one full sequence
    assert engine_kv_cache_gib(one, SMALL, torch.float32, longest_prompt=10) * GIB == (512 + 32 + 128) * 512


def test_auto_never_exceeds_the_fixed_size_and_falls_back_to_it_for_unknown_configs():
    big = LlamaConfig(num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, hidden_size=8192)
    assert engine_kv_cache_gib(cfg(), big, torch.float32) == KV_CACHE_AUTO_MAX_GIB

    class Opaque:  # no layer or head counts
        pass

    assert engine_kv_cache_gib(cfg(), Opaque(), torch.float32, 40) == KV_CACHE_AUTO_MAX_GIB


def test_an_explicit_size_is_used_as_given_fractions_included():
    assert engine_kv_cache_gib(cfg("generation.vllm_kv_cache_gib=0.5"), SMALL, torch.float32, 40) == 0.5
    assert cfg().generation.vllm_kv_cache_gib == "auto"


@pytest.mark.parametrize("bad", ["0", "-1", "big"])
def test_a_bad_size_fails_naming_the_field(bad):
    with pytest.raises(ConfigError, match="vllm_kv_cache_gib"):
        cfg(f"generation.vllm_kv_cache_gib={bad}")


def test_an_agent_run_sizes_for_the_prompt_limit_its_tool_schemas_are_not_measured():
    agent = load_config("agent_tiny", ["train.questions_per_step=4", "grpo.num_generations=8", "eval.batch_size=16"],
                        env_file=None, environ={})  # fmt: skip
    assert agent.agent.enabled
    g = agent.generation
    sequence = g.max_prompt_length + agent.agent.max_total_tokens + 128
    assert engine_kv_cache_gib(agent, SMALL, torch.float32, longest_prompt=40) * GIB == 32 * sequence * 512
