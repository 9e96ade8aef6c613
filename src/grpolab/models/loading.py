"""Load the policy, its tokenizer and its KL reference through the ordinary `from_pretrained` path.

The reference model costs no memory with LoRA: it is the same module with the adapter disabled.
Full fine-tuning keeps a frozen copy. With beta = 0 there is no reference at all.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpolab.config.schema import ModelConfig
from grpolab.errors import UserError
from grpolab.models.gguf_cache import GGUF_ALIASES, GGUFModelMissing, cached_model_dir
from grpolab.models.tiny_model import TINY_AGENT_DIR, TINY_DIR
from grpolab.models.verify import check_model_dir


class ModelLoadError(UserError, RuntimeError):
    """The model or tokenizer could not be loaded; the message says what to do."""


@dataclass
class LoadedModel:
    model: Any  # the trainable policy (a PeftModel for LoRA)
    tokenizer: Any
    reference: Any | None  # frozen copy (full fine-tuning, beta > 0), else None
    is_peft: bool
    stop_ids: list[int]
    source: str  # the resolved path or hub id
    # decided here, once: a KL term needs a reference (beta > 0); LoRA's is the policy, adapter off.
    # Everything downstream asks this (or whether it was handed a reference), never beta.
    has_reference: bool

    @contextlib.contextmanager
    def as_reference(self) -> Iterator[Any]:
        """The model to score reference log-probs with (no gradients)."""
        with torch.no_grad():
            if not self.has_reference:
                raise RuntimeError("no reference model: beta is 0")
            if self.is_peft:
                with self.model.disable_adapter():
                    yield self.model
            else:
                yield self.reference


def resolve_source(name: str, cache_dir: str | None = None) -> str:
    if name == "tiny":
        return str(TINY_DIR)
    if name == "tiny-agent":  # the tiny model after a tool-use warm start (agent presets)
        return str(TINY_AGENT_DIR)
    if name in GGUF_ALIASES:  # a real model from a pip wheel, converted once into the cache
        try:
            return str(cached_model_dir(name, cache_dir))
        except GGUFModelMissing as err:
            raise ModelLoadError(str(err)) from None
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def ensure_reachable(source: str, revision: str | None = None) -> None:
    """A hub id that is neither local nor cached must be downloadable: fail in seconds if not."""
    if Path(source).exists():
        return
    if source.startswith((".", "/", "~")):
        raise ModelLoadError(f"model.name: local model directory not found: {source}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json", revision=revision)
    if isinstance(cached, str):
        return
    how = (
        f"download it where the hub is reachable (`hf download {source} --local-dir DIR`), "
        "copy DIR here and set model.name=DIR"
    )
    # huggingface_hub's own view of the network: HF_HUB_OFFLINE, HF_ENDPOINT (mirrors), proxies
    from huggingface_hub import HfApi, is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if is_offline_mode():
        raise ModelLoadError(f"model.name: '{source}' is not in the local cache and HF_HUB_OFFLINE is set; {how}")
    try:
        HfApi().model_info(source, revision=revision, timeout=10)
    except RepositoryNotFoundError:
        raise ModelLoadError(f"model.name: no model '{source}' on the hub (or it is private: log in)") from None
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code in (401, 403):  # gated: from_pretrained says how
            return
        raise ModelLoadError(f"model.name: the hub refused '{source}' ({err}); {how}") from None
    except Exception as err:  # connection refused, DNS, proxy, timeout: the hub cannot be reached
        raise ModelLoadError(
            f"model.name: cannot reach the Hugging Face hub to download '{source}' ({type(err).__name__}); {how}"
        ) from None


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(source: str, cfg: ModelConfig) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(source, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"model.name: the tokenizer of '{source}' has no chat template; use an instruct/chat model "
            "or one whose tokenizer_config.json sets chat_template"
        )
    return tokenizer


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template puts right after an assistant message, if any.

    Chat models end a turn with a token that is often not the tokenizer's eos (Qwen's `<|im_end|>`
    when eos is `<|endoftext|>`, Llama 3's `<|eot_id|>`, Gemma's `<end_of_turn>`): rendering one
    assistant message and reading the token after its text finds it for any template.
    """
    marker = "GRPOLAB_END_OF_TURN_PROBE"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that rejects this conversation: fall back to eos and the generation config
        return None
    if marker not in text:
        return None
    after = text.split(marker, 1)[1]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return ids[0] if ids and ids[0] in special else None


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """eos, the generation config's eos ids, and the chat template's end-of-turn token."""
    ids = {tokenizer.eos_token_id, end_of_turn_id(tokenizer)}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def disable_dropout(model: Any) -> None:
    """Set every dropout probability to 0, as TRL's `disable_dropout=True` does: the policy's
    log-probs must be those of the model that sampled (a deterministic forward), so the on-policy
    ratio is 1 and the KL to the reference is not noise. Covers nn.Dropout modules (LoRA's too) and
    the attention dropout that HF attention layers read from a float attribute."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def load_model(
    cfg: ModelConfig, *, beta: float, device: torch.device, lora: Any | None = None, quiet: bool = False
) -> LoadedModel:
    """The policy comes back in eval mode: every pass sets its mode explicitly (train for the
    gradient passes, where checkpointing and any dropout apply; eval for generation and no-grad).
    A status line says what is loading (a real model takes a while; quiet: none)."""
    from grpolab.observe.console import Working

    with Working(f"loading model {cfg.name} ({cfg.finetune})", quiet=quiet):
        return _load_model(cfg, beta=beta, device=device, lora=lora)


def _load_model(cfg: ModelConfig, *, beta: float, device: torch.device, lora: Any | None) -> LoadedModel:
    source = resolve_source(cfg.name, cfg.cache_dir)
    ensure_reachable(source, cfg.revision)
    if Path(source).is_dir():  # a local directory: check its files before transformers guesses why not
        check_model_dir(Path(source), adapter=False, what="model.name")
    tokenizer = load_tokenizer(source, cfg)
    kwargs: dict[str, Any] = {
        "revision": cfg.revision,
        "trust_remote_code": cfg.trust_remote_code,
        "dtype": pick_dtype(cfg.dtype, device),
    }
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        model = model.to(device)  # type: ignore[arg-type]
    except OSError as err:
        raise ModelLoadError(f"model.name: could not load '{source}': {err}") from None
    return prepare_model(model, tokenizer, cfg, beta=beta, source=source, lora=lora)


def prepare_model(
    model: Any, tokenizer: Any, cfg: ModelConfig, *, beta: float, source: str, lora: Any | None = None
) -> LoadedModel:
    """A loaded transformers model (from `load_model`, or the user's own object through the Python
    API) made ready to train: LoRA (`lora`: a peft LoraConfig; None = one from model.lora_*) or a
    frozen KL reference copy."""
    if not cfg.dropout:
        disable_dropout(model)
    if cfg.gradient_checkpointing:
        # transformers checkpoints only in training mode (update.py sets it for gradient passes).
        # Non-reentrant: gradients reach LoRA weights even though the frozen embeddings' output
        # does not require grad (the reentrant variant would silently drop them).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    has_reference = beta > 0  # the one place that asks: a KL term needs a reference
    reference = None
    if cfg.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        lora = lora or LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(model, lora)
        except ValueError as err:  # peft's NoMatchingPeftModuleError (target modules) is one
            raise ModelLoadError(_lora_problem(model, lora, err, cfg.name)) from None
        if not cfg.dropout:
            disable_dropout(model)  # the LoRA branch's dropout too
    elif has_reference:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        reference=reference,
        is_peft=cfg.finetune == "lora",
        stop_ids=stop_token_ids(model, tokenizer),
        source=source,
        has_reference=has_reference,
    )


def _lora_problem(model: Any, lora: Any, err: ValueError, name: str) -> str:
    """One line for a LoRA config peft refused; for target modules that match nothing, the names that
    would (the model's linear layers), which can only be known once the model is built."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "not found in the base model" not in first:
        return f"LoRA config refused by peft: {first}"
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    targets = lora.target_modules if isinstance(lora.target_modules, str) else sorted(lora.target_modules)
    return (
        f"model.lora_target_modules: {targets} match no module of {name}; its linear layers are "
        f"{', '.join(linear) or 'none'} (or use all-linear)"
    )


def attach_adapter(model: Any, adapter: str) -> Any:
    """A trained LoRA adapter (a directory) on the loaded base model, in eval mode."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter).eval()


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
