"""The update step on a real (tiny, in-process) model: masks, equivalence, LoRA reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from grpolab.algo.logprobs import sequence_logprobs
from grpolab.algo.loss import StepTotals, grpo_loss
from grpolab.config.load import load_config
from grpolab.models.loading import LoadedModel
from grpolab.rollout.types import Rollout, collate
from grpolab.train.schedule import build_optimizer
from grpolab.train.update import policy_update


def make_batch(pad_id: int, n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rollouts = []
    for i in range(n):
        prompt = torch.randint(4, 90, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g).tolist()
        completion = torch.randint(4, 90, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
        mask = [1] * len(completion)
        if i % 3 == 0 and len(completion) > 2:
            mask[1] = 0  # a tool-output token inside the completion
        rollouts.append(Rollout(i // 2, prompt, completion, mask, "", False))
    return collate(rollouts, pad_id)


def config(**overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    return load_config(
        None, ["train.questions_per_step=4", "grpo.num_generations=2", *items], env_file=None, environ={}
    )


def test_masked_positions_get_exactly_zero_gradient(tiny_llama, tiny_tokenizer):
    batch = make_batch(tiny_tokenizer.pad_token_id)
    hidden_grad = {}

    def keep_grad(module, args, output):  # the decoder's last hidden states feed only the LM head
        output.last_hidden_state.retain_grad()
        hidden_grad["out"] = output

    tiny_llama.model.register_forward_hook(keep_grad)
    logp, _ = sequence_logprobs(tiny_llama, batch, temperature=1.0)
    adv = torch.linspace(-1, 1, len(batch))
    loss, _ = grpo_loss(
        logp,
        logp.detach(),
        None,
        adv,
        batch.completion_mask,
        epsilon=0.2,
        epsilon_high=None,
        beta=0.0,
        loss_type="grpo",
        totals=StepTotals(len(batch), float(batch.completion_mask.sum()), 8),
    )
    loss.backward()
    grad = hidden_grad["out"].last_hidden_state.grad  # [N, P+C, H]; position P-1+j predicts completion token j
    P, C = batch.prompt_length, batch.completion_mask.shape[1]
    per_position = grad[:, P - 1 : P - 1 + C, :].abs().sum(-1)  # [N, C]
    masked = batch.completion_mask == 0  # padding, post-eos and tool tokens
    assert masked.any()
    assert torch.all(per_position[masked] == 0.0)
    assert torch.all(per_position[~masked] > 0.0)
    assert torch.all(grad[:, P - 1 + C, :] == 0.0)  # the last position predicts nothing trained


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_micro_batching_does_not_change_the_update(tiny_llama, tiny_tokenizer, loss_type):
    batch = make_batch(tiny_tokenizer.pad_token_id)
    adv = torch.linspace(-1, 1, len(batch))
    results = []
    for micro in (8, 1):
        model = copy.deepcopy(tiny_llama)
        cfg = config(
            **{"train.micro_batch_size": micro, "grpo.loss_type": loss_type, "grpo.beta": 0.0, "optim.lr": 0.01}
        )
        # SGD, not Adam: Adam's first step is lr * sign(grad), which turns float noise in a
        # near-zero gradient into a full step; SGD's update is the gradient itself.
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        out = policy_update(model, optimizer, scheduler, batch, adv, cfg, reference=None)
        results.append((out.metrics, [p.detach().clone() for p in model.parameters()]))
    (m1, p1), (m8, p8) = results
    assert m1["loss"] == pytest.approx(m8["loss"], rel=1e-5, abs=1e-7)
    for a, b in zip(p1, p8):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_first_step_is_on_policy_with_zero_kl(tiny_llama, tiny_tokenizer):
    batch = make_batch(tiny_tokenizer.pad_token_id)
    reference = copy.deepcopy(tiny_llama).eval()
    loaded = LoadedModel(tiny_llama, tiny_tokenizer, reference, False, [2], "test")
    cfg = config(**{"grpo.beta": 0.1})
    optimizer, scheduler = build_optimizer(tiny_llama, cfg)
    out = policy_update(tiny_llama, optimizer, scheduler, batch, torch.ones(len(batch)), cfg, loaded.as_reference)
    assert out.metrics["ratio_mean"] == 1.0
    assert out.metrics["kl"] == 0.0
    assert out.metrics["clip_ratio/region_mean"] == 0.0


def test_lora_changes_only_the_adapter_and_reference_is_the_base(tiny_llama, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(tiny_llama)
    batch = make_batch(tiny_tokenizer.pad_token_id)
    model = get_peft_model(
        tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    loaded = LoadedModel(model, tiny_tokenizer, None, True, [2], "test")
    cfg = config(**{"grpo.beta": 0.1, "optim.lr": 0.05})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer, scheduler = build_optimizer(model, cfg)
    for _ in range(2):  # LoRA B starts at 0: the second step is the first to move the output
        policy_update(model, optimizer, scheduler, batch, torch.linspace(-1, 1, len(batch)), cfg, loaded.as_reference)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    with loaded.as_reference() as ref:
        ref_logp, _ = sequence_logprobs(ref, batch, 1.0)
    base_logp, _ = sequence_logprobs(base, batch, 1.0)
    policy_logp, _ = sequence_logprobs(model, batch, 1.0)
    assert torch.allclose(ref_logp, base_logp, atol=1e-6)
    assert not torch.allclose(policy_logp, base_logp, atol=1e-4)


def test_second_iteration_is_off_policy_and_clipped(tiny_llama, tiny_tokenizer):
    # num_iterations=2: the old log-probs are taken once before the first update, so in the
    # second pass the ratio moves away from 1 and large steps get clipped.
    batch = make_batch(tiny_tokenizer.pad_token_id)
    cfg = config(**{"grpo.num_iterations": 2, "grpo.beta": 0.0, "optim.lr": 0.05, "grpo.epsilon": 0.01})
    optimizer, scheduler = build_optimizer(tiny_llama, cfg)
    out = policy_update(tiny_llama, optimizer, scheduler, batch, torch.linspace(-1, 1, len(batch)), cfg, None)
    assert out.metrics["ratio_mean"] != 1.0
    assert out.metrics["clip_ratio/region_mean"] > 0.0
    assert scheduler.last_epoch == 2  # one scheduler step per optimizer step


def test_schedule_factors_by_hand():
    from grpolab.train.schedule import lr_factor

    # total 10, warmup 2: steps 0, 1 ramp to 0.5, 1.0; linear step 6 -> (10 - 6) / 8 = 0.5
    assert [lr_factor(s, 10, 2, "linear") for s in (0, 1, 6)] == [0.5, 1.0, 0.5]
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(9, 10, 0, "constant") == 1.0
