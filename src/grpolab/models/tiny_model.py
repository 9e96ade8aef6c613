"""The embedded default model: a ~1M-parameter Llama with a character-level tokenizer.

Why these choices:
- Llama architecture: in transformers 5 the Qwen2 model type forces its own tokenizer class, which
  silently drops spaces and newlines from a custom tokenizer; Llama takes whatever tokenizer we save.
- Character-level vocabulary (printable ASCII + newline + 4 specials): any text round-trips, and
  digits are single tokens, so arithmetic is learnable by a tiny model.
- Warm start by supervised fine-tuning on the task formats, stopped at a target held-out accuracy
  (about half): GRPO needs reward variance inside a group, which a model at 0% or 100% cannot give.

The build is deterministic for a given seed and thread count (CPU). `grpolab make-tiny-model` runs it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

TINY_DIR = Path(__file__).resolve().parent / "tiny"
TINY_AGENT_DIR = Path(__file__).resolve().parent / "tiny_agent"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|unk|>"]

# ChatML with tool support: the tool list is rendered into the system turn, tool results come
# back as `tool` turns, and an assistant's structured tool_calls are rendered as Hermes
# <tool_call> blocks (the model itself writes them as plain text).
CHAT_TEMPLATE = (
    # Every newline is emitted as an expression ({{ nl }}): whitespace control ({%- -%}) would
    # otherwise eat newlines written as template text.
    "{%- set nl = '\n' -%}"
    "{%- set ns = namespace(names='') -%}"
    "{%- for t in tools or [] -%}{%- set ns.names = ns.names + (' ' if ns.names else '') + (t.function or t).name -%}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and ns.names and message.role != 'system' -%}"
    "{{ '<|im_start|>system' + nl + 'Tools: ' + ns.names + '<|im_end|>' + nl }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message.role + nl + (message.content or '') }}"
    "{%- if loop.first and ns.names and message.role == 'system' -%}"
    "{{ nl + 'Tools: ' + ns.names }}"
    "{%- endif -%}"
    "{%- for call in message.tool_calls or [] -%}"
    "{{ '<tool_call>' + ((call.function or call) | tojson) + '</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>' + nl }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' + nl }}{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    chars = ["\n"] + [chr(i) for i in range(32, 127)]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|unk|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int, size: str = "default") -> LlamaForCausalLM:
    hidden, layers, heads = {"default": (128, 4, 4), "test": (32, 2, 2)}[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


@dataclass(frozen=True)
class WarmStartExample:
    """A conversation to imitate. messages: the prompt turns; target: the assistant reply (plain text,
    no end-of-turn token). For a tool-use trace, `observations[i]` is the tool result that follows
    reply i and `later_targets[i]` the assistant reply after it; only replies are trained, and of
    those only the ones from index `first_trained_reply` on (0 = the target, 1 = the first later one)."""

    messages: list[dict[str, Any]]
    target: str
    answer: str
    tools: list[dict[str, Any]] | None = None
    observations: tuple[str, ...] = ()
    later_targets: tuple[str, ...] = ()
    first_trained_reply: int = 0


@dataclass
class WarmStartResult:
    steps: int
    seconds: float
    heldout_accuracy: float
    history: list[dict[str, float]]


def encode_example(tok: PreTrainedTokenizerFast, example: WarmStartExample) -> tuple[list[int], list[int]]:
    """Token ids of the conversation and a 0/1 list marking the trained ones (replies + <|im_end|>,
    from reply `first_trained_reply` on).

    Built the way rollouts are: the prompt, then each reply's ids, then the tool turn and the next
    generation prompt as an untrained delta.
    """
    text = tok.apply_chat_template(
        example.messages,
        tools=example.tools,  # type: ignore[arg-type]
        add_generation_prompt=True,
        tokenize=False,
    )
    ids: list[int] = tok(text, add_special_tokens=False)["input_ids"]
    trained = [0] * len(ids)
    replies = (example.target, *example.later_targets)
    for index, reply in enumerate(replies):
        reply_ids = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids += reply_ids
        trained += [int(index >= example.first_trained_reply)] * len(reply_ids)
        if index < len(example.observations):
            delta = f"\n<|im_start|>tool\n{example.observations[index]}<|im_end|>\n<|im_start|>assistant\n"
            delta_ids = tok(delta, add_special_tokens=False)["input_ids"]
            ids += delta_ids
            trained += [0] * len(delta_ids)
    return ids, trained


def _batch(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (seq, trained) in enumerate(encoded):
        offset = width - len(seq)  # left padding, as in rollouts
        ids[row, offset:] = torch.tensor(seq)
        attn[row, offset:] = 1
        targets = torch.tensor([tok if keep else -100 for tok, keep in zip(seq, trained)])
        labels[row, offset:] = targets
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    return ids, attn, labels, positions


def warm_start(
    model: LlamaForCausalLM,
    tok: PreTrainedTokenizerFast,
    sample_batch: Callable[[random.Random, int], list[WarmStartExample]],
    heldout_accuracy: Callable[[LlamaForCausalLM], float],
    *,
    seed: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    max_steps: int = 3000,
    eval_every: int = 50,
    target_accuracy: float = 0.5,
    warmup: int = 50,
    log: Callable[[str], None] = print,
    on_eval: Callable[[int, float], None] | None = None,
) -> WarmStartResult:
    """Supervised next-token training on sampled replies until held-out accuracy reaches the target."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, step / max_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    accuracy = 0.0
    step = 0
    for step in range(1, max_steps + 1):
        model.train()
        encoded = [encode_example(tok, ex) for ex in sample_batch(rng, batch_size)]
        ids, attn, labels, positions = _batch(encoded, tok.pad_token_id)
        loss = model(input_ids=ids, attention_mask=attn, position_ids=positions, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % eval_every == 0:
            accuracy = heldout_accuracy(model)
            elapsed = time.perf_counter() - start
            loss_value = float(loss.detach())
            history.append({"step": step, "loss": loss_value, "accuracy": accuracy, "seconds": elapsed})
            log(f"warm start step {step}: loss {loss_value:.3f}  held-out accuracy {accuracy:.1%}  ({elapsed:.0f}s)")
            if on_eval is not None:
                on_eval(step, accuracy)
            if accuracy >= target_accuracy:
                break
    return WarmStartResult(step, time.perf_counter() - start, accuracy, history)


def save_tiny(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, out_dir: Path, card: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    (out_dir / "build.json").write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(card))


def model_card(card: dict[str, Any]) -> str:
    """A short human-readable card; build.json beside it has every number."""
    accuracy = card.get("heldout_greedy_accuracy")
    lines = [
        "# grpolab tiny model",
        "",
        "A character-level Llama made by `grpolab make-tiny-model` (src/grpolab/models/make_tiny.py):",
        "random init, then a short supervised warm start on the task formats, stopped at a target",
        "held-out accuracy so that GRPO has reward variance to learn from.",
        "",
        f"- parameters: {card.get('parameters')}; vocabulary: {card.get('vocabulary')} tokens (ASCII + 4 specials)",
        f"- warm start: {card.get('warm_start_steps')} steps, {card.get('warm_start_seconds')} s, "
        f"seed {card.get('seed')}",
        f"- held-out greedy accuracy: {accuracy:.1%} on {card.get('heldout')}" if accuracy is not None else "",
        f"- warm-start mixture: {json.dumps(card.get('mixture'))}",
        f"- tool-use traces: {json.dumps(card.get('tool_traces'))}",
        *([f"- agent stage (tiny-agent): {json.dumps(card['agent_stage'])}"] if "agent_stage" in card else []),
        "",
        "Not a useful language model: a fixture that makes `grpolab train` run and learn offline.",
    ]
    return "\n".join(lines) + "\n"
