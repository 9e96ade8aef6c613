"""AdamW decays weight matrices, never biases or normalisation weights (as the HF Trainer)."""

from __future__ import annotations

import torch

from grpolab.compat.load import load_config
from grpolab.train.optimizer import build_optimizer


def step_with_zero_gradients(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], float]:
    """One AdamW step of build_optimizer's optimizer (weight_decay 0.1) where every gradient is 0.

    Adam's own update is then exactly 0 (m = v = 0), so a parameter moves only through decay:
    p <- p * (1 - lr * weight_decay). Returns the weights before the step and that factor."""
    cfg = load_config(None, ["optim.weight_decay=0.1", "optim.lr=0.5"], env_file=None, environ={})
    optimizer, _ = build_optimizer(model, cfg)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    return before, 1 - lr * 0.1


def test_biases_and_layernorm_are_not_decayed_and_weights_are():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    before, factor = step_with_zero_gradients(model)
    assert factor < 1.0
    torch.testing.assert_close(model[0].weight.detach(), before["0.weight"] * factor)  # decayed
    for name in ("0.bias", "1.weight", "1.bias"):  # Linear bias, LayerNorm gain and bias
        assert torch.equal(dict(model.named_parameters())[name].detach(), before[name]), name


def test_rmsnorm_weights_of_the_tiny_llama_are_not_decayed(tiny_llama):
    before, factor = step_with_zero_gradients(tiny_llama)
    params = dict(tiny_llama.named_parameters())
    norms = [name for name in params if "norm" in name]  # input_layernorm, post_attention_layernorm, model.norm
    assert "model.norm.weight" in norms and len(norms) >= 3
    for name in norms:
        assert torch.equal(params[name].detach(), before[name]), name
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(params[name].detach(), before[name] * factor)
