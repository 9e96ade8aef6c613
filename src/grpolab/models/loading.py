"""Load the policy, its tokenizer and its KL reference through the ordinary `from_pretrained` path.

The reference model costs no memory with LoRA: it is the same module with the adapter disabled.
Full fine-tuning keeps a frozen copy. With beta = 0 there is no reference at all.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpolab.config.schema import ModelConfig
from grpolab.models.tiny_model import TINY_AGENT_DIR, TINY_DIR
from grpolab.models.verify import check_model_dir

HUB_HOST = ("huggingface.co", 443)


class ModelLoadError(RuntimeError):
    """The model or tokenizer could not be loaded; the message says what to do."""


@dataclass
class LoadedModel:
    model: Any  # the trainable policy (a PeftModel for LoRA)
    tokenizer: Any
    reference: Any | None  # frozen copy (full fine-tuning, beta > 0), else None
    is_peft: bool
    stop_ids: list[int]
    source: str  # the resolved path or hub id

    @contextlib.contextmanager
    def as_reference(self) -> Iterator[Any]:
        """The model to score reference log-probs with (no gradients)."""
        with torch.no_grad():
            if self.is_peft:
                with self.model.disable_adapter():
                    yield self.model
            elif self.reference is not None:
                yield self.reference
            else:
                raise RuntimeError("no reference model: beta is 0")


def resolve_source(name: str) -> str:
    if name == "tiny":
        return str(TINY_DIR)
    if name == "tiny-agent":  # the tiny model after a tool-use warm start (agent presets)
        return str(TINY_AGENT_DIR)
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
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ModelLoadError(f"model.name: '{source}' is not in the local cache and HF_HUB_OFFLINE is set; {how}")
    try:
        socket.create_connection(HUB_HOST, timeout=3).close()
    except OSError as err:
        raise ModelLoadError(
            f"model.name: cannot reach the Hugging Face hub to download '{source}' ({err}); {how}"
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


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def load_model(cfg: ModelConfig, *, beta: float, device: torch.device, lora: Any | None = None) -> LoadedModel:
    source = resolve_source(cfg.name)
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
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
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
        model = get_peft_model(model, lora)
    elif beta > 0:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        reference=reference,
        is_peft=cfg.finetune == "lora",
        stop_ids=stop_token_ids(model, tokenizer),
        source=source,
    )


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
