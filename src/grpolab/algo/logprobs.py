"""Per-token log-probabilities and entropies of sampled ids, never holding [N, T, V] logits.

A real vocabulary makes the logits the largest tensor of a step: 48 sequences x 300 tokens x a
49k vocabulary is 2.8 GB in float32, and autograd would keep it (and its log-softmax) for the
backward pass. Instead the decoder's hidden states [N, T, H] go through the LM head a chunk of
positions at a time: the chunk's logits are used for the sampled token's log-prob and dropped, and
the backward pass recomputes them (activation checkpointing per chunk). Peak logits memory is one
chunk, the numbers and gradients are those of the unchunked computation (tested), and positions
that are padding are never sent through the head at all.

Two savings on the decoder, exact up to float rounding (tested): columns that are padding in every
row of a pass are cut off, and rows that share a prompt (a GRPO group) run it once and reuse its
keys and values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.checkpoint import checkpoint


class ForwardInputs(Protocol):
    """What a forward pass needs of a collated batch (rollout/types.Batch has it); a protocol, so
    algo/ imports nothing from the rest of grpolab."""

    input_ids: torch.Tensor  # [N, P+C]
    attention_mask: torch.Tensor  # [N, P+C]
    position_ids: torch.Tensor  # [N, P+C]
    completion_mask: torch.Tensor  # [N, C]
    prompt_length: int


@dataclass
class _Columns:
    """A batch restricted to some of its columns (satisfies ForwardInputs)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_length: int


def without_padding_columns(batch: ForwardInputs) -> ForwardInputs:
    """The batch without the columns that are padding in every row: leading prompt columns (a pass
    whose prompts are all shorter than the step's longest) and trailing completion columns (a pass
    whose completions all stopped early). Causal attention makes it exact: a trailing column is
    never attended to by an earlier one, a leading one is masked, and positions come from the
    attention mask. The completion keeps at least one column."""
    prompt_real = batch.attention_mask[:, : batch.prompt_length].any(dim=0)  # [P]
    completion_real = batch.attention_mask[:, batch.prompt_length :].any(dim=0)  # [C]
    start = int(prompt_real.float().argmax()) if bool(prompt_real.any()) else batch.prompt_length
    start = min(start, batch.prompt_length - 1)  # position P-1 predicts the first completion token
    width = max(1, int(completion_real.nonzero().max()) + 1) if bool(completion_real.any()) else 1
    end = batch.prompt_length + width
    if start == 0 and width == batch.completion_mask.shape[1]:
        return batch
    return _Columns(
        batch.input_ids[:, start:end],
        batch.attention_mask[:, start:end],
        batch.position_ids[:, start:end],
        batch.completion_mask[:, :width],
        batch.prompt_length - start,
    )


CHUNK_TOKENS = 1024  # positions per LM-head chunk: 1024 x 49k float32 logits = 200 MB transient


def tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature, without a pass over [.., V] (and its copy kept for backward) at 1.0."""
    return logits if temperature == 1.0 else logits / temperature


def token_logprobs(
    logits: torch.Tensor,
    ids: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = 8,
    entropy_grad: bool = False,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, T, V], ids [N, T] -> (logp [N, T], entropy [N, T]) at temperature.

    The sampler drew from softmax(logits / temperature), so the policy's probability of a sampled
    token must be computed at the same temperature or the on-policy ratio would not be 1.
    """
    if logits.shape[:2] != ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ids {tuple(ids.shape)} disagree")
    logps, entropies = [], []
    for start in range(0, logits.shape[0], chunk_rows):
        log_probs = torch.log_softmax(tempered(logits[start : start + chunk_rows].float(), temperature), dim=-1)
        logps.append(log_probs.gather(-1, ids[start : start + chunk_rows, :, None]).squeeze(-1))
        entropies.append(_entropy(log_probs, entropy_grad) if entropy else torch.zeros_like(logps[-1]))
    return torch.cat(logps), torch.cat(entropies)


def _chunk_logprobs(
    hidden: torch.Tensor,
    ids: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    temperature: float,
    entropy_grad: bool = False,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [M, H], ids [M] -> (logp [M], entropy [M], with gradient only if entropy_grad; zeros
    without entropy)."""
    log_probs = torch.log_softmax(tempered(head(hidden).float(), temperature), dim=-1)  # [M, V], this chunk only
    logp = log_probs.gather(-1, ids[:, None]).squeeze(-1)
    return logp, _entropy(log_probs, entropy_grad) if entropy else torch.zeros_like(logp)


def _entropy(log_probs: torch.Tensor, grad: bool) -> torch.Tensor:
    """log_probs [..., V] -> entropy [...]: an exp, a product and a sum over the vocabulary, which
    passes that only need log-probs (reference, sampler comparison) skip."""
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return -(log_probs.exp() * log_probs).sum(-1)


def hidden_logprobs(
    hidden: torch.Tensor,
    ids: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    temperature: float = 1.0,
    chunk_tokens: int = CHUNK_TOKENS,
    entropy_grad: bool = False,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [M, H] (one row per predicted position), ids [M] -> (logp [M], entropy [M]; zeros
    without entropy).

    head maps [m, H] -> logits [m, V]. With gradients enabled each chunk is checkpointed: its
    logits exist only inside the chunk's forward and, again, inside its backward.
    """
    if hidden.shape[0] != ids.shape[0]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and ids {tuple(ids.shape)} disagree")
    logps, entropies = [], []
    recompute = torch.is_grad_enabled() and hidden.requires_grad
    for start in range(0, hidden.shape[0], chunk_tokens):
        window = slice(start, start + chunk_tokens)
        part = (hidden[window], ids[window], head, temperature, entropy_grad, entropy)
        if recompute:
            chunk_logp, chunk_entropy = checkpoint(_chunk_logprobs, *part, use_reentrant=False)
        else:
            chunk_logp, chunk_entropy = _chunk_logprobs(*part)
        logps.append(chunk_logp)
        entropies.append(chunk_entropy)
    if not logps:
        return hidden.new_zeros(0), hidden.new_zeros(0)
    return torch.cat(logps), torch.cat(entropies)


def decoder_and_head(model: Any) -> tuple[Any, Callable[[torch.Tensor], torch.Tensor]] | None:
    """The causal LM's decoder stack and a function hidden -> logits, or None when the model does
    not expose them in the usual transformers layout (then the full-logits path is used).

    FSDP2 modules are excluded: their root module's forward hook gathers the root-level weights
    (embeddings, LM head), which calling the submodules directly would skip.
    """
    from torch.distributed.fsdp import FSDPModule

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel -> the LM
    if isinstance(base, FSDPModule) or isinstance(model, FSDPModule):
        return None
    decoder = getattr(base, getattr(base, "base_model_prefix", ""), None)
    get_head = getattr(base, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    if decoder is None or head is None or not isinstance(decoder, torch.nn.Module):
        return None
    config = getattr(base, "config", None)
    if getattr(config, "logit_scale", None) or getattr(config, "logits_scaling", None):
        return None  # models that rescale logits in their own forward: use it
    softcap = getattr(config, "final_logit_softcapping", None)
    if softcap:  # Gemma 2: tanh soft-capping applied by the model's forward after the head

        def capped(hidden: torch.Tensor) -> torch.Tensor:
            return torch.tanh(head(hidden) / softcap) * softcap

        return decoder, capped
    return decoder, head


def shared_prompt_rows(batch: ForwardInputs) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The distinct prompts of a batch: (first row of each [U], row -> its prompt [N]), or None when
    no two rows share a prompt (nothing to reuse). A GRPO group's G rows share one."""
    prompt = batch.input_ids[:, : batch.prompt_length]
    prompt_mask = batch.attention_mask[:, : batch.prompt_length]
    keys = torch.cat([prompt, prompt_mask.to(prompt.dtype)], dim=1)  # [N, 2P]: same padding too
    distinct, inverse = torch.unique(keys, dim=0, return_inverse=True)
    if distinct.shape[0] == keys.shape[0]:
        return None
    first = torch.full((distinct.shape[0],), keys.shape[0], dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, inverse, torch.arange(keys.shape[0], device=keys.device), reduce="amin")
    return first, inverse


def pass_positions(batch: ForwardInputs, share_prompt: bool) -> tuple[int, int]:
    """(positions the decoder computes, of which real tokens) for sequence_logprobs on this batch:
    its columns that are not padding in every row, each shared prompt once with share_prompt (as
    the decoder path does when the cache is reused). The difference is padding: the measure
    train/padded_fraction reports, and what grouping rows by length (train/update_plan.py) lowers."""
    batch = without_padding_columns(batch)
    rows = shared_prompt_rows(batch) if share_prompt else None
    if rows is None:
        return batch.attention_mask.numel(), int(batch.attention_mask.sum())
    first = rows[0]
    prompt = batch.attention_mask[first, : batch.prompt_length]  # [U, P']: each prompt once
    completion = batch.attention_mask[:, batch.prompt_length :]  # [N, C']
    return prompt.numel() + completion.numel(), int(prompt.sum() + completion.sum())


def can_share_prompt(model: Any, training: bool) -> bool:
    """Whether sequence_logprobs(share_prompt=True) can reuse a prompt's keys and values for this
    model in a training (gradient) or scoring pass: the usual decoder layout (not FSDP), and not
    a training pass under gradient checkpointing (which turns the cache off)."""
    parts = decoder_and_head(model)
    return parts is not None and not _cache_off(parts[0], training)


def _cache_off(decoder: Any, training: bool) -> bool:
    return training and bool(getattr(decoder, "gradient_checkpointing", False))


def cache_keyword(decoder: Any) -> str:
    """The decoder's name for a KV cache passed in: `cache` in newer transformers, which warns on every
    call (FutureWarning) that `past_key_values` goes away; `past_key_values` in older ones."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _shared_prompt_hidden(
    decoder: Any, batch: ForwardInputs, rows: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor | None:
    """Hidden states [N, C, H] that predict the completion tokens, with each distinct prompt run
    through the decoder once: its keys and values (and the hidden state of its last position) are
    indexed out to every row that shares it, and the completions run on top of that cache.
    Gradients flow back through the indexing, so a shared prompt receives the sum of its rows'
    gradients, as it does when each row recomputes it. None if the decoder returns no cache."""
    from transformers import DynamicCache

    first, inverse = rows
    length = batch.prompt_length
    prompt = decoder(
        input_ids=batch.input_ids[first, :length],
        attention_mask=batch.attention_mask[first, :length],
        position_ids=batch.position_ids[first, :length],
        use_cache=True,  # the model builds its own cache type; only a DynamicCache is reused below
    )
    cache = getattr(prompt, "cache", None)
    cache = prompt.past_key_values if cache is None else cache  # `cache` since transformers 5.2x
    if not isinstance(cache, DynamicCache) or cache.get_seq_length() != length:
        return None
    cache.batch_select_indices(inverse.to(batch.input_ids.device))  # [U, ...] -> [N, ...]
    completion = decoder(
        input_ids=batch.input_ids[:, length:],
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids[:, length:],
        use_cache=True,
        **{cache_keyword(decoder): cache},
    ).last_hidden_state  # [N, C, H]
    last_prompt = prompt.last_hidden_state[inverse, -1:]  # [N, 1, H]: predicts the first completion token
    return torch.cat([last_prompt, completion[:, :-1]], dim=1)


def sequence_logprobs(
    model: Any,
    batch: ForwardInputs,
    temperature: float,
    chunk_tokens: int = CHUNK_TOKENS,
    share_prompt: bool = False,
    entropy_grad: bool = False,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward a collated batch; log-probs [N, C] and entropies [N, C] of its completion tokens.

    Position P-1 predicts the first completion token, position P+C-2 the last. Padding positions
    (attention 0) get log-prob 0 and entropy 0; every loss multiplies them by mask 0.

    share_prompt: rows with the same prompt (a GRPO group) run it once and reuse its keys and
    values (see _shared_prompt_hidden); the same numbers up to float rounding, with (rows - distinct
    prompts) x P fewer positions through the decoder. Ignored where can_share_prompt is False.
    entropy_grad: the entropies carry a gradient (the entropy bonus); otherwise they are constants.
    entropy: False for a pass that only needs log-probs: the entropies come back as zeros.
    """
    full_width = batch.completion_mask.shape[1]
    batch = without_padding_columns(batch)  # [N, P'+C'], C' <= C: padded back to C at the end
    completion_len = batch.completion_mask.shape[1]
    targets = batch.input_ids[:, batch.prompt_length :]  # [N, C']
    parts = decoder_and_head(model)
    if parts is None:
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=completion_len + 1,
            use_cache=False,
        )
        logp, entropies = token_logprobs(
            out.logits[:, :-1, :], targets, temperature, entropy_grad=entropy_grad, entropy=entropy
        )
        return _pad_columns(logp, full_width), _pad_columns(entropies, full_width)
    decoder, head = parts
    share = share_prompt and not _cache_off(decoder, decoder.training)  # can_share_prompt, decoder in hand
    rows = shared_prompt_rows(batch) if share else None
    hidden = _shared_prompt_hidden(decoder, batch, rows) if rows is not None else None
    if hidden is None:
        hidden = decoder(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state  # [N, P'+C', H]
        start = batch.prompt_length - 1
        hidden = hidden[:, start : start + completion_len]  # [N, C', H]: the positions that predict completions
    real = batch.attention_mask[:, batch.prompt_length :].bool()  # [N, C']: not padding
    logp_flat, entropy_flat = hidden_logprobs(
        hidden[real], targets[real], head, temperature, chunk_tokens, entropy_grad, entropy
    )  # [M] each
    logp = hidden.new_zeros(targets.shape, dtype=torch.float32).masked_scatter(real, logp_flat)
    entropies = hidden.new_zeros(targets.shape, dtype=torch.float32).masked_scatter(real, entropy_flat)
    return _pad_columns(logp, full_width), _pad_columns(entropies, full_width)


def _pad_columns(values: torch.Tensor, width: int) -> torch.Tensor:
    """[N, C'] -> [N, width] with zeros on the right (the trimmed columns were padding)."""
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))
