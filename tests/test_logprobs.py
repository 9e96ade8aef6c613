"""Log-probs from hidden states in chunks equal the full-logits computation, values and gradients,
without ever saving [N, T, V] logits for backward; gradient checkpointing acts for full FT and LoRA."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from grpolab.algo.logprobs import (
    cache_keyword,
    can_share_prompt,
    hidden_logprobs,
    sequence_logprobs,
    shared_prompt_rows,
    token_logprobs,
)
from grpolab.config.schema import ModelConfig
from grpolab.models.loading import load_model
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Unsharded
from grpolab.rollout.types import Rollout, collate


def padded_batch(pad_id: int):
    g = torch.Generator().manual_seed(3)
    rollouts = []
    for i in range(6):
        prompt = torch.randint(4, 90, (3 + i % 3,), generator=g).tolist()
        completion = torch.randint(4, 90, (1 + (i * 5) % 7,), generator=g).tolist()  # ragged: padding
        rollouts.append(Rollout(i // 2, prompt, completion, [1] * len(completion), "", False))
    return collate(rollouts, pad_id)


def grouped_batch(pad_id: int, groups: int = 3, size: int = 3):
    """GRPO-shaped: `groups` prompts of different lengths (left padding), `size` ragged completions each."""
    g = torch.Generator().manual_seed(5)
    rollouts = []
    for q in range(groups):
        prompt = torch.randint(4, 90, (3 + 2 * q,), generator=g).tolist()
        for k in range(size):
            completion = torch.randint(4, 90, (1 + (3 * q + 5 * k) % 7,), generator=g).tolist()
            rollouts.append(Rollout(q, prompt, completion, [1] * len(completion), "", False))
    return collate(rollouts, pad_id)


def full_logits_logprobs(model, batch, temperature):
    """The reference computation: the model's own forward, every logit materialised."""
    C = batch.completion_mask.shape[1]
    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).logits[:, -C - 1 : -1]  # [N, C, V]
    logp, entropy = token_logprobs(logits, batch.input_ids[:, batch.prompt_length :], temperature)
    real = batch.attention_mask[:, batch.prompt_length :].bool()
    return logp * real, entropy * real  # padding positions are 0 in the chunked path


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_hidden_chunks_equal_unchunked_values_and_gradients(chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 37, bias=False)
    hidden = torch.randn(23, 8, requires_grad=True)
    ids = torch.randint(0, 37, (23,))
    logp, entropy = hidden_logprobs(hidden, ids, head, temperature=0.7, chunk_tokens=chunk)
    (logp * torch.linspace(-1, 1, 23)).sum().backward()
    got = (hidden.grad.clone(), head.weight.grad.clone())

    hidden.grad, head.weight.grad = None, None
    ref_logp, ref_entropy = token_logprobs(head(hidden)[None], ids[None], temperature=0.7)
    (ref_logp[0] * torch.linspace(-1, 1, 23)).sum().backward()
    torch.testing.assert_close(logp, ref_logp[0])
    torch.testing.assert_close(entropy, ref_entropy[0])
    torch.testing.assert_close(got[0], hidden.grad)
    torch.testing.assert_close(got[1], head.weight.grad)


@pytest.mark.parametrize("temperature", [0.9, 1.0])  # 1.0 skips the division
def test_sequence_logprobs_equal_the_models_own_logits(tiny_llama, tiny_tokenizer, temperature):
    batch = padded_batch(tiny_tokenizer.pad_token_id)
    weights = torch.randn(batch.completion_mask.shape)
    twin = copy.deepcopy(tiny_llama)
    logp, entropy = sequence_logprobs(tiny_llama, batch, temperature=temperature, chunk_tokens=4)
    (logp * weights).sum().backward()
    ref_logp, ref_entropy = full_logits_logprobs(twin, batch, temperature)
    (ref_logp * weights).sum().backward()
    torch.testing.assert_close(logp, ref_logp)
    torch.testing.assert_close(entropy, ref_entropy)
    for (name, p), q in zip(tiny_llama.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_a_pass_without_entropies_gives_the_same_logprobs_and_gradients(tiny_llama, tiny_tokenizer):
    batch = padded_batch(tiny_tokenizer.pad_token_id)
    weights = torch.randn(batch.completion_mask.shape)
    twin = copy.deepcopy(tiny_llama)
    logp, entropy = sequence_logprobs(tiny_llama, batch, temperature=0.9, chunk_tokens=4)
    only_logp, zeros = sequence_logprobs(twin, batch, temperature=0.9, chunk_tokens=4, entropy=False)
    assert torch.equal(logp, only_logp) and bool(entropy.abs().sum() > 0) and not zeros.any()
    (logp * weights).sum().backward()
    (only_logp * weights).sum().backward()
    for (name, p), q in zip(tiny_llama.named_parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad), name
    logits, ids = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))  # the full-logits path
    full, full_entropy = token_logprobs(logits, ids, 0.9)
    full_only, full_zeros = token_logprobs(logits, ids, 0.9, entropy=False)
    assert torch.equal(full, full_only) and bool(full_entropy.abs().sum() > 0) and not full_zeros.any()


def saved_for_backward(fn) -> list[torch.Size]:
    shapes: list[torch.Size] = []

    def pack(t):
        shapes.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


def test_no_full_vocabulary_tensor_is_saved_for_backward(tiny_llama, tiny_tokenizer):
    batch = padded_batch(tiny_tokenizer.pad_token_id)
    vocab = tiny_llama.config.vocab_size
    chunk = 4
    shapes = saved_for_backward(lambda: sequence_logprobs(tiny_llama, batch, 1.0, chunk_tokens=chunk))
    assert not [s for s in shapes if s and s[-1] == vocab]  # checkpointed chunks keep only their inputs
    shapes = saved_for_backward(lambda: full_logits_logprobs(tiny_llama, batch, 1.0))
    assert [s for s in shapes if s and s[-1] == vocab]  # the unchunked path does (the test can fail)


def tiny_config(**fields) -> ModelConfig:
    return ModelConfig(name="tiny", dtype="float32", **fields)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_reference_exists_exactly_when_beta_is_positive(finetune):
    # the one decision about a KL term, made at load: full fine-tuning copies the model, LoRA turns
    # its adapter off; without one, asking for the reference is an error, not a silent policy
    cpu = torch.device("cpu")
    with_kl = load_model(tiny_config(finetune=finetune), beta=0.04, device=cpu)
    without = load_model(tiny_config(finetune=finetune), beta=0.0, device=cpu)
    assert (with_kl.has_reference, without.has_reference) == (True, False)
    assert (with_kl.reference is not None) == (finetune == "full") and without.reference is None
    with with_kl.as_reference() as reference:
        assert reference is (with_kl.model if finetune == "lora" else with_kl.reference)
    with pytest.raises(RuntimeError, match="no reference model"), without.as_reference():
        pass


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_gradient_checkpointing_is_active_and_changes_no_gradient(tiny_tokenizer, finetune):
    batch = padded_batch(tiny_tokenizer.pad_token_id)
    grads, saved = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        loaded = load_model(
            tiny_config(finetune=finetune, gradient_checkpointing=checkpointing, lora_dropout=0.1),
            beta=0.0,
            device=torch.device("cpu"),
        )
        model = loaded.model
        base = model.get_base_model() if finetune == "lora" else model  # the transformers model under LoRA
        assert base.is_gradient_checkpointing is checkpointing
        assert not model.training  # loaded in eval mode; update.py sets train mode for gradient passes
        model.train()

        def step(model=model):
            logp, _ = sequence_logprobs(model, batch, 1.0)
            (logp * batch.completion_mask).sum().backward()

        saved.append(len(saved_for_backward(step)))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert saved[1] < saved[0] / 2  # layer activations are recomputed, not kept
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:  # dropout is off by default, so the recomputed forward is the same forward
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_dropout_is_off_by_default_and_kept_on_request():
    def dropouts(dropout: bool) -> list[float]:
        loaded = load_model(
            tiny_config(finetune="lora", lora_dropout=0.1, dropout=dropout), beta=0.0, device=torch.device("cpu")
        )
        return [m.p for m in loaded.model.modules() if isinstance(m, torch.nn.Dropout)]

    assert dropouts(False) and set(dropouts(False)) == {0.0}
    assert set(dropouts(True)) == {0.1}


def test_update_trains_in_train_mode_and_scores_in_eval_mode(tiny_tokenizer):
    from grpolab.compat.load import load_config
    from grpolab.train.optimizer import build_optimizer
    from grpolab.train.update import policy_update

    cfg = load_config(
        None,
        ["train.questions_per_step=3", "grpo.num_generations=2", "grpo.beta=0.1", "grpo.num_iterations=2"],
        env_file=None,
        environ={},
    )
    loaded = load_model(cfg.model, beta=cfg.grpo.beta, device=torch.device("cpu"))
    modes: list[tuple[bool, bool]] = []  # (training, grad enabled) of every forward
    loaded.model.register_forward_hook(lambda m, a, o: modes.append((m.training, torch.is_grad_enabled())))
    loaded.model.model.register_forward_hook(lambda m, a, o: modes.append((m.training, torch.is_grad_enabled())))
    optimizer, scheduler = build_optimizer(loaded.model, cfg)
    batch = padded_batch(tiny_tokenizer.pad_token_id)
    policy_update(
        loaded.model,
        optimizer,
        scheduler,
        batch,
        torch.linspace(-1, 1, 6),
        cfg,
        None,
        DistContext.single(),
        Unsharded(loaded.model),
    )
    assert modes and {m for m in modes if m[1]} == {(True, True)}  # every gradient pass in train mode
    assert {m for m in modes if not m[1]} == {(False, False)}  # old log-probs: eval mode
    assert not loaded.model.training


def decoder_positions(model) -> list[int]:
    """Records the positions (rows x length) each decoder call embeds."""
    seen: list[int] = []
    model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    return seen


def test_shared_prompt_rows_finds_each_groups_prompt(tiny_tokenizer):
    batch = grouped_batch(tiny_tokenizer.pad_token_id)
    rows = shared_prompt_rows(batch)
    assert rows is not None
    first, inverse = rows
    assert first.tolist() == [0, 3, 6] or sorted(first.tolist()) == [0, 3, 6]
    assert [int(first[i]) for i in inverse] == [0, 0, 0, 3, 3, 3, 6, 6, 6]  # each row -> its group's first row
    assert shared_prompt_rows(padded_batch(tiny_tokenizer.pad_token_id)) is None  # all prompts distinct


@pytest.mark.parametrize("finetune", ["full", "lora"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_shared_prompt_gives_the_same_logprobs_and_gradients_from_fewer_positions(tiny_tokenizer, finetune, mode):
    batch = grouped_batch(tiny_tokenizer.pad_token_id)
    weights = torch.randn(batch.completion_mask.shape)
    results = []
    for share in (True, False):
        torch.manual_seed(0)
        model = load_model(tiny_config(finetune=finetune), beta=0.0, device=torch.device("cpu")).model
        getattr(model, mode)()
        if finetune == "lora":  # lora_B starts at 0: move it, so the adapter's gradient path is exercised
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        positions = decoder_positions(model)
        with warnings.catch_warnings():  # newer transformers warn on every call with a deprecated keyword
            warnings.simplefilter("error", FutureWarning)
            logp, entropy = sequence_logprobs(model, batch, 0.9, share_prompt=share)
        (logp * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((logp, entropy, grads, sum(positions)))
    (logp, entropy, grads, positions), (ref_logp, ref_entropy, ref_grads, ref_positions) = results
    torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for name, grad in grads.items():  # float rounding differs (other matmul shapes): relative to the largest entry
        scale = float(ref_grads[name].abs().max())
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-4 * scale, rtol=0, msg=name)
    prompt, completion = batch.prompt_length, batch.completion_mask.shape[1]
    assert ref_positions == 9 * (prompt + completion)
    assert positions == 3 * prompt + 9 * completion  # each prompt once (the test fails if sharing falls back)


def test_the_prompt_cache_goes_in_under_the_decoders_own_keyword():
    class Newer(torch.nn.Module):  # transformers >= 5.2x: `cache` (`past_key_values` warns FutureWarning)
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return input_ids

    class Older(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return input_ids

    assert (cache_keyword(Newer()), cache_keyword(Older())) == ("cache", "past_key_values")


def test_no_sharing_under_gradient_checkpointing(tiny_tokenizer):
    model = load_model(tiny_config(gradient_checkpointing=True), beta=0.0, device=torch.device("cpu")).model
    assert can_share_prompt(model, training=False)  # scoring passes: no checkpointing, the cache works
    assert not can_share_prompt(model, training=True)  # checkpointing turns the cache off in training
    model.train()
    batch = grouped_batch(tiny_tokenizer.pad_token_id)
    positions = decoder_positions(model)
    logp, _ = sequence_logprobs(model, batch, 1.0, share_prompt=True)
    assert logp.requires_grad and positions == [batch.input_ids.numel()]


def test_columns_that_are_padding_in_every_row_are_not_computed(tiny_llama, tiny_tokenizer):
    whole = padded_batch(tiny_tokenizer.pad_token_id)
    completion_lengths = whole.attention_mask[:, whole.prompt_length :].sum(1)
    prompt_lengths = whole.attention_mask[:, : whole.prompt_length].sum(1)
    rows = torch.nonzero((completion_lengths < completion_lengths.max()) & (prompt_lengths < prompt_lengths.max()))
    batch = whole.select(rows.flatten())  # a pass of short rows: keeps the step's full width
    assert len(batch) >= 2
    width = int(batch.attention_mask.any(0).sum())
    assert width < batch.input_ids.shape[1]  # the test needs all-padding columns at both ends
    weights = torch.randn(batch.completion_mask.shape)
    twin = copy.deepcopy(tiny_llama)
    positions = decoder_positions(tiny_llama)
    logp, entropy = sequence_logprobs(tiny_llama, batch, temperature=0.8)
    (logp * weights).sum().backward()
    ref_logp, ref_entropy = full_logits_logprobs(twin, batch, 0.8)  # every column
    (ref_logp * weights).sum().backward()
    assert logp.shape == ref_logp.shape == batch.completion_mask.shape  # padded back to the step's width
    torch.testing.assert_close(logp, ref_logp)
    torch.testing.assert_close(entropy, ref_entropy)
    for (name, p), q in zip(tiny_llama.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert positions == [len(batch) * width]
