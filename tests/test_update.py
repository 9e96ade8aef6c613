"""The update step on a real (tiny, in-process) model: masks, equivalence, LoRA reference."""

from __future__ import annotations

import contextlib
import copy
from types import SimpleNamespace

import pytest
import torch

from dist_workers import VARIANTS, with_sampler_logprobs
from grpolab.algo.logprobs import sequence_logprobs
from grpolab.algo.loss import StepTotals, grpo_loss
from grpolab.compat.load import load_config
from grpolab.models.loading import LoadedModel
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Unsharded
from grpolab.rollout.backend import HFGenerator, SamplingParams
from grpolab.rollout.types import Rollout, collate
from grpolab.train.optimizer import build_optimizer
from grpolab.train.update import idle_mismatch, policy_update
from grpolab.train.update_plan import plan_update, rows_with_signal


def update(model, optimizer, scheduler, batch, adv, cfg, reference=None):
    """policy_update in one process on an unsharded model."""
    return policy_update(
        model, optimizer, scheduler, batch, adv, cfg, reference, DistContext.single(), Unsharded(model)
    )


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


def sgd_update(model, batch, adv, loss_type: str, micro: int, **overrides):
    """policy_update with SGD(lr=1) on a copy of `model`: (metrics, updated parameters).

    SGD, not Adam: Adam's first step is lr * sign(grad), which turns float noise in a near-zero
    gradient into a full step; SGD's update is the gradient itself.
    """
    model = copy.deepcopy(model)
    cfg = config(**{"train.micro_batch_size": micro, "grpo.loss_type": loss_type, "grpo.beta": 0.0, **overrides})
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    out = update(model, optimizer, scheduler, batch, adv, cfg, None)
    return out.metrics, [p.detach().clone() for p in model.parameters()]


def assert_same_update(first, second):
    (m1, p1), (m2, p2) = first, second
    assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-5, abs=1e-7)
    for a, b in zip(p1, p2):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_micro_batching_does_not_change_the_update(tiny_llama, tiny_tokenizer, loss_type):
    batch = make_batch(tiny_tokenizer.pad_token_id)
    adv = torch.linspace(-1, 1, len(batch))
    assert_same_update(
        sgd_update(tiny_llama, batch, adv, loss_type, 8), sgd_update(tiny_llama, batch, adv, loss_type, 1)
    )


@pytest.mark.parametrize("micro", [8, 4])  # one pass; two groups per pass
def test_sharing_each_groups_prompt_leaves_the_update_unchanged(tiny_llama, tiny_tokenizer, micro):
    g = torch.Generator().manual_seed(1)
    rollouts = []
    for group in range(4):  # prompts of different lengths (left padding), ragged completions, a tool token
        prompt = torch.randint(4, 90, (3 + 2 * group,), generator=g).tolist()
        for k in range(2):
            completion = torch.randint(4, 90, (1 + (group + 3 * k) % 6,), generator=g).tolist()
            mask = [1] * len(completion)
            if len(completion) > 2:
                mask[1] = 0
            rollouts.append(Rollout(group, prompt, completion, mask, "", False))
    batch = collate(rollouts, tiny_tokenizer.pad_token_id)
    adv = torch.linspace(-1, 1, len(batch))
    shared = sgd_update(tiny_llama, batch, adv, "dapo", micro)
    unshared = sgd_update(tiny_llama, batch, adv, "dapo", micro, **{"train.share_prompt": "false"})
    assert_same_update(shared, unshared)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_skipping_zero_advantage_sequences_leaves_the_update_unchanged(tiny_llama, tiny_tokenizer, loss_type):
    batch = make_batch(tiny_tokenizer.pad_token_id)
    adv = torch.tensor([0.0, 0.7, 0.0, -0.7, 0.0, 0.0, 1.2, -1.2])  # two flat groups' worth of zeros
    skipped = sgd_update(tiny_llama, batch, adv, loss_type, 2)
    full = sgd_update(tiny_llama, batch, adv, loss_type, 2, **{"train.skip_zero_advantage": "false"})
    assert skipped[0]["train/sequences_trained"] == 0.5
    assert full[0]["train/sequences_trained"] == 1.0
    assert_same_update(skipped, full)


def test_a_step_with_no_signal_still_applies_adam_momentum(tiny_llama, tiny_tokenizer):
    # Skipping every pass must equal a zero gradient, not a missing one: AdamW skips a parameter whose
    # grad is None, but with a zero grad its momentum from the previous step still moves it.
    batch = make_batch(tiny_tokenizer.pad_token_id)

    def two_steps(skip: str) -> list[torch.Tensor]:
        model = copy.deepcopy(tiny_llama)
        cfg = config(**{"grpo.beta": 0.0, "grpo.loss_type": "dapo", "train.skip_zero_advantage": skip})
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        update(model, optimizer, scheduler, batch, torch.linspace(-1, 1, len(batch)), cfg, None)
        after_first = [p.detach().clone() for p in model.parameters()]
        out = update(model, optimizer, scheduler, batch, torch.zeros(len(batch)), cfg, None)
        assert out.metrics["train/sequences_trained"] == (0.0 if skip == "true" else 1.0)
        moved = [not torch.equal(a, b) for a, b in zip(after_first, model.parameters())]
        assert all(moved)  # momentum moved every parameter on the step without signal
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(two_steps("true"), two_steps("false")):
        assert torch.allclose(a, b, atol=1e-7)


def test_a_step_with_no_signal_still_logs_the_sampler_mismatch(tiny_llama, tiny_tokenizer):
    plain = make_batch(tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = sequence_logprobs(tiny_llama, plain, temperature=1.0)  # [N, C]: the sampler's, here
    rollouts = []  # the same rows, now with sampler log-probs
    for i in range(len(plain)):
        keep = plain.attention_mask[i, : plain.prompt_length].bool()
        prompt = plain.input_ids[i, : plain.prompt_length][keep].tolist()
        n = int(plain.attention_mask[i, plain.prompt_length :].sum())
        completion = plain.input_ids[i, plain.prompt_length : plain.prompt_length + n].tolist()
        mask = plain.completion_mask[i, :n].tolist()
        shifted = (logp[i, :n] + 0.01 * torch.tensor(mask)).tolist()  # 0.01 off on every trained token
        rollouts.append(Rollout(i // 2, prompt, completion, mask, "", False, shifted))
    batch = collate(rollouts, tiny_tokenizer.pad_token_id)
    model = copy.deepcopy(tiny_llama)
    cfg = config(**{"grpo.beta": 0.0, "grpo.loss_type": "dapo", "train.micro_batch_size": 2})
    # weight decay moves the weights even at a zero gradient: the mismatch must be measured before
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    metrics = update(model, optimizer, scheduler, batch, torch.zeros(len(batch)), cfg, None).metrics
    assert metrics["train/sequences_trained"] == 0.0
    assert metrics["mismatch/logp_abs_mean"] == pytest.approx(0.01, abs=1e-4)  # the policy that sampled
    # where a forward is a collective (FSDP), a rank with nothing to train runs none: the sharding says so
    plan = plan_update(model, batch, torch.zeros(len(batch)), cfg, DistContext.single(), kl=False)
    assert plan.parts == []
    assert len(idle_mismatch(model, plan, cfg, Unsharded(model), contextlib.nullcontext())) == 1
    collective = SimpleNamespace(forwards_alone=False)
    assert idle_mismatch(model, plan, cfg, collective, contextlib.nullcontext()) == []


def test_zero_advantage_rows_are_kept_where_they_change_the_gradient():
    adv = torch.tensor([0.0, 1.0, 0.0, -1.0])
    assert rows_with_signal(adv, config(), has_kl_term=False).tolist() == [1, 3]
    assert rows_with_signal(adv, config(), has_kl_term=True) is None  # the KL term has a gradient at adv 0
    assert rows_with_signal(adv, config(**{"grpo.loss_type": "bnpo"}), has_kl_term=False) is None
    assert rows_with_signal(torch.ones(4), config(), has_kl_term=False) is None  # nothing to leave out


def test_bnpo_is_the_mean_of_the_micro_batch_losses(tiny_llama, tiny_tokenizer):
    # bnpo divides each micro-batch by its own token count (TRL), so unlike the others it depends on
    # the micro-batching. Two identities pin it down: with one sequence per micro-batch it is grpo's
    # mean of sequence means; with one micro-batch it is dapo's sum / all tokens.
    batch = make_batch(tiny_tokenizer.pad_token_id)
    adv = torch.linspace(-0.5, 1, len(batch))  # mean 0.25: the losses compared are not all 0
    assert_same_update(sgd_update(tiny_llama, batch, adv, "bnpo", 1), sgd_update(tiny_llama, batch, adv, "grpo", 8))
    assert_same_update(sgd_update(tiny_llama, batch, adv, "bnpo", 8), sgd_update(tiny_llama, batch, adv, "dapo", 8))
    # 4 micro-batches of 2: at ratio 1 and beta 0 each token's loss is -adv, so micro-batch m's loss
    # is -sum(adv_i * n_i) / sum(n_i) over its 2 sequences, and the step loss is the mean of the 4.
    tokens = batch.completion_mask.sum(-1)  # [8]
    local = [-(adv[m : m + 2] * tokens[m : m + 2]).sum() / tokens[m : m + 2].sum() for m in range(0, 8, 2)]
    metrics, _ = sgd_update(tiny_llama, batch, adv, "bnpo", 2)
    assert metrics["loss"] == pytest.approx(float(sum(local) / 4), rel=1e-5)


def test_dr_grpo_normalises_agent_episodes_by_the_episode_token_cap(tiny_llama, tiny_tokenizer):
    # An agent episode runs to agent.max_total_tokens, not generation.max_new_tokens (one turn), so
    # dr_grpo's constant is N x 100 here: at ratio 1 and beta 0, loss = -sum(adv_i * n_i) / (8 * 100).
    batch = make_batch(tiny_tokenizer.pad_token_id)
    adv = torch.linspace(-1, 1, len(batch))
    agent = {"agent.enabled": "true", "agent.max_total_tokens": 100, "generation.max_new_tokens": 10}
    metrics, _ = sgd_update(tiny_llama, batch, adv, "dr_grpo", 8, **agent)
    expected = -(adv * batch.completion_mask.sum(-1)).sum() / (8 * 100)
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_first_step_is_on_policy_and_moves_along_the_sampled_tokens_logprobs_at_t(tiny_llama, tiny_tokenizer):
    # Rollouts sampled by the backend at T = 0.7 from prompts of different lengths (left padding).
    # Reference log-probs are computed here one row at a time, unpadded, with the shift done by hand:
    # logits at position P-1+j, divided by T, predict completion token j.
    # (1) On-policy: they equal the sampler's recorded log-probs (so the first ratio really is 1).
    # (2) At ratio = exp(logp - logp.detach()) = 1 with beta 0 the grpo loss is -1/N sum_i adv_i
    #     mean_j ratio(i, j): value -mean(adv), gradient that of -1/N sum_i adv_i mean_j logp(i, j).
    #     One SGD(lr=1) update must move the weights by exactly that gradient; an update at the wrong
    #     temperature or with the tokens shifted by one position moves them elsewhere.
    temperature = 0.7
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
    torch.manual_seed(0)
    generator = HFGenerator(tiny_llama, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id])
    out = generator.generate(prompts, SamplingParams(max_new_tokens=6, temperature=temperature, num_samples=2))
    rollouts = [
        Rollout(row // 2, prompts[row // 2], ids, [1] * len(ids), "", truncated, logprobs)
        for row, (ids, truncated, logprobs) in enumerate(zip(out.completions, out.truncated, out.logprobs))
    ]
    adv = torch.linspace(-0.5, 1.0, len(rollouts))

    reference = copy.deepcopy(tiny_llama)
    objective = torch.zeros(())
    for i, rollout in enumerate(rollouts):
        p, c = len(rollout.prompt_ids), len(rollout.completion_ids)
        ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])  # [1, P+C], no padding
        logits = reference(input_ids=ids).logits[0, p - 1 : p + c - 1] / temperature  # [C, V]
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, p:, None]).squeeze(-1)  # [C]
        torch.testing.assert_close(logp.detach(), torch.tensor(rollout.sample_logprobs), atol=1e-5, rtol=1e-5)
        ratio = torch.exp(logp - logp.detach())  # [C], all 1
        objective = objective - adv[i] * ratio.mean() / len(rollouts)
    objective.backward()
    expected = [p.detach() - p.grad for p in reference.parameters()]

    cfg = config(
        **{"grpo.loss_type": "grpo", "grpo.beta": 0.0, "generation.temperature": temperature,
           "train.micro_batch_size": 2, "optim.max_grad_norm": 1e6}
    )  # fmt: skip
    optimizer = torch.optim.SGD(tiny_llama.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batch = collate(rollouts, tiny_tokenizer.pad_token_id)
    metrics = update(tiny_llama, optimizer, scheduler, batch, adv, cfg, None).metrics
    assert metrics["loss"] == pytest.approx(-0.25, rel=1e-5)  # -mean(adv)
    assert float(objective.detach()) == pytest.approx(-0.25, rel=1e-5)
    moved = max(float((a - b.detach()).abs().max()) for a, b in zip(expected, reference.parameters()))
    assert moved > 1e-4, "the update must move the weights, or equality proves nothing"
    for updated, wanted in zip(tiny_llama.parameters(), expected):
        torch.testing.assert_close(updated.detach(), wanted, atol=1e-6, rtol=1e-5)


def test_lora_changes_only_the_adapter_and_reference_is_the_base(tiny_llama, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(tiny_llama)
    batch = make_batch(tiny_tokenizer.pad_token_id)
    model = get_peft_model(
        tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    loaded = LoadedModel(model, tiny_tokenizer, None, True, [2], "test", has_reference=True)
    cfg = config(**{"grpo.beta": 0.1, "optim.lr": 0.05})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer, scheduler = build_optimizer(model, cfg)
    for _ in range(2):  # LoRA B starts at 0: the second step is the first to move the output
        update(model, optimizer, scheduler, batch, torch.linspace(-1, 1, len(batch)), cfg, loaded.as_reference)
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
    out = update(tiny_llama, optimizer, scheduler, batch, torch.linspace(-1, 1, len(batch)), cfg, None)
    assert out.metrics["ratio_mean"] != 1.0
    assert out.metrics["clip_ratio/region_mean"] > 0.0
    assert scheduler.last_epoch == 2  # one scheduler step per optimizer step


def test_auto_passes_hold_whole_groups_when_the_prompt_is_shared():
    from grpolab.train.update_plan import micro_batch_size

    cfg = config(**{"train.questions_per_step": 4, "grpo.num_generations": 8})

    def sized(prompt: int, completion: int, shared: bool) -> int:
        rollouts = [Rollout(i // 8, [5] * prompt, [6] * completion, [1] * completion, "", False) for i in range(32)]
        return micro_batch_size(cfg, collate(rollouts, 0), shared)

    assert sized(40, 64, shared=False) == 512 // 104  # every row costs prompt + completion
    assert sized(40, 64, shared=True) == 8  # one group: 40 + 8 x 64 = 552 positions, its prompt once
    assert sized(7, 12, shared=True) == 32  # small groups: several per pass
    assert sized(40, 96, shared=True) == (512 - 40) // (96 + 5)  # a group too big for a pass: split


def rollouts_of(batch, pad_id: int) -> list[Rollout]:
    """The rows of a collated batch back as rollouts (prompt and completion without padding)."""
    out = []
    for i in range(len(batch)):
        keep = batch.attention_mask[i, : batch.prompt_length].bool()
        n = int(batch.attention_mask[i, batch.prompt_length :].sum())
        completion = batch.input_ids[i, batch.prompt_length : batch.prompt_length + n].tolist()
        prompt = batch.input_ids[i, : batch.prompt_length][keep].tolist()
        out.append(Rollout(i // 2, prompt, completion, batch.completion_mask[i, :n].int().tolist(), "", False))
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_objective_variant_gives_the_same_update_whatever_the_micro_batch_split(
    tiny_llama, tiny_tokenizer, variant
):
    # Two iterations, so the second one is off-policy (ratios leave 1: clipping, the SAPO gate, the
    # VESPO weight, the off-policy mask act), and sampler log-probs 0.3 sin(.) off the policy's.
    pad = tiny_tokenizer.pad_token_id
    batch = collate(with_sampler_logprobs(tiny_llama, rollouts_of(make_batch(pad), pad)), pad)
    adv = torch.tensor([1.0, -0.5, 0.25, -0.75, 0.6, -1.2, 0.3, 0.9])
    overrides = {"grpo.num_iterations": "2", **VARIANTS[variant]}
    loss_type = overrides.pop("grpo.loss_type", "dapo")
    whole = sgd_update(tiny_llama, batch, adv, loss_type, 8, **overrides)
    assert_same_update(whole, sgd_update(tiny_llama, batch, adv, loss_type, 1, **overrides))
    assert_same_update(whole, sgd_update(tiny_llama, batch, adv, loss_type, 2, **overrides))
    # the variant acted: its loss or its update is not plain dapo's (gradient clipping to norm 1 can
    # hide a variant that only rescales the gradient, like luspo's normaliser, from the weights)
    backend = {k: v for k, v in overrides.items() if k in ("generation.backend", "grpo.num_iterations")}
    plain = sgd_update(tiny_llama, batch, adv, "dapo", 8, **backend, **{"grpo.importance_sampling_correction": "false"})
    moved = any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(whole[1], plain[1]))
    assert moved or abs(whole[0]["loss"] - plain[0]["loss"]) > 1e-4, "the variant changed nothing"


def test_update_times_the_reference_policy_and_optimizer_phases_apart(tiny_llama, tiny_tokenizer):
    import time

    batch = make_batch(tiny_tokenizer.pad_token_id)
    cfg = config(**{"grpo.beta": 0.1, "grpo.num_iterations": 2})
    optimizer, scheduler = build_optimizer(tiny_llama, cfg)
    frozen = copy.deepcopy(tiny_llama)

    @contextlib.contextmanager
    def slow_reference():
        time.sleep(0.3)  # billed to time/reference, nothing else
        yield frozen

    optimizer.register_step_pre_hook(lambda *_: time.sleep(0.2))  # twice: one step per iteration
    out = update(tiny_llama, optimizer, scheduler, batch, torch.linspace(-1, 1, len(batch)), cfg, slow_reference)
    seconds = {phase: out.metrics[f"time/{phase}"] for phase in ("reference", "policy", "optimizer")}
    assert 0.3 <= seconds["reference"] < 0.3 + 2.0 and 0.4 <= seconds["optimizer"] < 0.4 + 2.0
    assert 0.0 < seconds["policy"] < 2.0  # the gradient passes of a tiny model, no sleep of ours
