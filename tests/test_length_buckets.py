"""Micro-batches of rows of similar length (train.length_buckets): the padded fraction of the
training passes drops to its hand-computed value, and the log-probs and the step's gradient are
those of the unordered passes."""

from __future__ import annotations

import pytest
import torch

from grpolab.algo.logprobs import sequence_logprobs
from grpolab.compat.load import load_config
from grpolab.models.loading import load_model
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Unsharded
from grpolab.rollout.types import Rollout, collate
from grpolab.train.optimizer import build_optimizer
from grpolab.train.update import policy_update
from grpolab.train.update_plan import length_order, micro_batches


def config(share: bool, buckets: bool, questions: int, micro: int, *extra: str):
    overrides = [f"train.questions_per_step={questions}", "grpo.num_generations=2", f"train.micro_batch_size={micro}"]
    overrides += [f"train.share_prompt={share}", f"train.length_buckets={buckets}", "optim.max_grad_norm=1e6"]
    return load_config(None, overrides + list(extra), env_file=None, environ={})


def batch_of(groups: list[tuple[int, list[int]]], pad_id: int):
    """groups: (prompt length, [completion length of each of its rows]) -> a collated batch."""
    g = torch.Generator().manual_seed(7)
    rollouts = []
    for q, (prompt_len, completion_lens) in enumerate(groups):
        prompt = torch.randint(4, 90, (prompt_len,), generator=g).tolist()
        for length in completion_lens:
            completion = torch.randint(4, 90, (length,), generator=g).tolist()
            rollouts.append(Rollout(q, prompt, completion, [1] * length, "", False))
    return collate(rollouts, pad_id)


def train_step(cfg, batch, finetune: str = "full"):
    """One policy_update from the same initial weights -> (metrics, the step's gradients)."""
    torch.manual_seed(0)
    model = load_model(cfg.model.model_copy(update={"finetune": finetune}), beta=0.0, device=torch.device("cpu")).model
    if finetune == "lora":  # lora_B starts at 0: move it, so the adapter's gradient path is exercised
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    optimizer, scheduler = build_optimizer(model, cfg)
    adv = torch.linspace(-1, 1, len(batch))  # even length: no row has advantage 0
    result = policy_update(model, optimizer, scheduler, batch, adv, cfg, None, DistContext.single(), Unsharded(model))
    return result.metrics, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("share", [False, True])
def test_padded_fraction_is_the_hand_computed_one_and_drops_to_zero(tiny_tokenizer, share):
    pad = tiny_tokenizer.pad_token_id
    if share:
        # 4 groups of 2 rows, prompts of 2 tokens, completions 1,1 / 5,5 / 1,1 / 5,5; passes of 2 groups.
        # In order, each pass runs 2 prompts x 2 (all real) and 4 completions x 5 columns of which
        # 1+1+5+5 are real: 8 of 24 padded, twice = 1/3. Bucketed: [1,1,1,1] and [5,5,5,5], no padding.
        batch, questions, micro = batch_of([(2, [1, 1]), (2, [5, 5]), (2, [1, 1]), (2, [5, 5])], pad), 4, 4
        before = 16 / 48
    else:
        # 4 rows of 2 prompt tokens, completions 1, 5, 1, 5; passes of 2 rows, each 2 x 7 positions.
        # In order each pass pads 4 of 14 (the short row's completion) = 8/28; bucketed, none.
        batch, questions, micro = batch_of([(2, [1, 5]), (2, [1, 5])], pad), 2, 2
        before = 8 / 28
    off, _ = train_step(config(share, False, questions, micro), batch)
    on, _ = train_step(config(share, True, questions, micro), batch)
    assert off["train/padded_fraction"] == pytest.approx(before)
    assert on["train/padded_fraction"] == 0.0


def ragged_batch(pad_id: int):
    """4 prompts of 2-9 tokens, 2 rows each with completions of 1-12 tokens: lengths far apart."""
    return batch_of([(9, [12, 1]), (2, [1, 11]), (5, [3, 12]), (3, [2, 1])], pad_id)


@pytest.mark.parametrize("share", [False, True])
def test_bucketed_passes_give_each_row_the_same_logprobs(tiny_llama, tiny_tokenizer, share):
    batch = ragged_batch(tiny_tokenizer.pad_token_id)
    order = length_order(batch, share)
    assert sorted(order.tolist()) == list(range(len(batch))) and order.tolist() != list(range(len(batch)))
    if share:  # each prompt's rows stay next to each other
        groups = (order // 2).tolist()
        assert all(groups[i] == groups[i + 1] for i in range(0, len(groups), 2))
    tiny_llama.eval()
    parts = micro_batches(len(batch), 4)

    def passes(rows):
        with torch.no_grad():
            return torch.cat([sequence_logprobs(tiny_llama, rows.select(p), 0.9, share_prompt=share)[0] for p in parts])

    plain, bucketed = passes(batch), passes(batch.select(order))
    back = torch.empty_like(bucketed)
    back[order] = bucketed
    # each row's numbers come from other matmul shapes (a pass's width): equal up to float rounding
    torch.testing.assert_close(back, plain, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("finetune", ["full", "lora"])
@pytest.mark.parametrize("share", [False, True])
def test_bucketed_step_has_the_same_gradient_and_less_padding(tiny_tokenizer, finetune, share):
    batch = ragged_batch(tiny_tokenizer.pad_token_id)
    off, grads_off = train_step(config(share, False, 4, 4), batch, finetune)
    on, grads_on = train_step(config(share, True, 4, 4), batch, finetune)
    assert on["train/padded_fraction"] < off["train/padded_fraction"]
    assert on["loss"] == pytest.approx(off["loss"], rel=1e-5, abs=1e-7)
    assert grads_on.keys() == grads_off.keys() and grads_on
    for name, grad in grads_on.items():  # summation order differs: relative to the largest entry
        scale = float(grads_off[name].abs().max())
        torch.testing.assert_close(grad, grads_off[name], atol=1e-5 * scale, rtol=0, msg=name)
