"""The weights handed to an inference engine: plain HF names, LoRA merged exactly, nothing mutated."""

from __future__ import annotations

import torch

from grpolab.rollout.weight_sync import engine_weights


def test_full_model_weights_are_its_state_dict(tiny_llama):
    assert {name for name, _ in engine_weights(tiny_llama)} == set(tiny_llama.state_dict())
    for name, tensor in engine_weights(tiny_llama):
        assert torch.equal(tensor, tiny_llama.state_dict()[name])


def test_lora_weights_equal_merge_and_unload_without_touching_the_policy(tiny_llama):
    import copy

    from peft import LoraConfig, get_peft_model

    plain_names = set(tiny_llama.state_dict())
    peft_model = get_peft_model(tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # a fresh adapter has B = 0 (no change): make the delta non-zero
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    synced = dict(engine_weights(peft_model))
    expected = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(synced) == plain_names == set(expected)
    for name, tensor in synced.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(synced[q_proj], tiny_llama.model.layers[0].self_attn.q_proj.base_layer.weight)
    for name, tensor in peft_model.state_dict().items():  # the policy and its base stay as they were
        assert torch.equal(tensor, before[name]), name
