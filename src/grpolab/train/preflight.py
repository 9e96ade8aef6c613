"""Checks that run before the model loads, so a run that cannot finish fails in seconds with one line
instead of after minutes of loading (or, worse, finishes having learned nothing):

- `--resume PATH` names a complete checkpoint (or a run directory that has one);
- a local model directory has config.json and intact safetensors files;
- the device exists (`train.device=cuda` on a machine without a GPU);
- `train.precision=bf16` has native bfloat16 on that device and float32/bfloat16 weights;
- `model.attn_implementation` is one transformers knows (it checks only inside from_pretrained);
- the output directory can be written (a read-only OUTPUT_DIR fails here, not at the first save);
- a judge reward has its API key in the environment and its endpoint accepts connections;
- prompts longer than `generation.max_prompt_length` are counted and reported once (after the
  tokenizer loads: counting needs it).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from grpolab.config.schema import Config, RewardsConfig
from grpolab.errors import UserError
from grpolab.models.verify import check_model_dir
from grpolab.train.resume_check import resolve_resume_path

log = logging.getLogger("grpolab")

LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


class PreflightError(UserError, RuntimeError):
    """A run that cannot work, found before loading the model; one line naming the field or path."""


def check_device(name: str) -> None:
    """`train.device` names a device this machine has."""
    import torch

    kind, _, index = name.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PreflightError(f"train.device={name}: no CUDA GPU is available here (use train.device=cpu or auto)")
        if index and int(index) >= count:
            raise PreflightError(f"train.device={name}: this machine has {count} CUDA device(s) (cuda:0..{count - 1})")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise PreflightError(f"train.device={name}: MPS is not available here (use train.device=cpu or auto)")


def check_writable(directory: Path, field: str) -> None:
    """Create `directory` (and parents) and write a file into it; any failure is one line naming both."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise PreflightError(f"{field}: cannot write to {directory} ({reason})") from None


def check_judges(rewards: RewardsConfig, environ: dict[str, str] | None = None, timeout_s: float = 3.0) -> None:
    """Every `judge` reward: its API key variable is set (unless the endpoint is on this machine, where
    local servers often need none) and its host accepts a TCP connection. An unreachable judge would
    otherwise score None for every sample of the whole run."""
    from grpolab.rewards.judge import DEFAULT_BASE_URL

    env = os.environ if environ is None else environ
    for spec in rewards.functions:
        if spec.name != "judge":
            continue
        url = str(spec.params.get("base_url", DEFAULT_BASE_URL))
        key_env = str(spec.params.get("api_key_env", "OPENROUTER_API_KEY"))
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not env.get(key_env) and host not in LOOPBACK:
            raise PreflightError(
                f"rewards: judge '{spec.label}' needs an API key in ${key_env} (not set) for {url}; "
                "put it in the environment or .env"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as err:
            raise PreflightError(f"rewards: judge '{spec.label}' endpoint {url} is not reachable ({err})") from None


def check_attention(name: str | None) -> None:
    """A known attention implementation, or a hub kernel (`kernels-community/flash-attn`: org/name)."""
    if name is not None and name not in ATTENTION and "/" not in name:
        raise PreflightError(
            f"model.attn_implementation: unknown attention '{name}'; use one of {', '.join(ATTENTION)} "
            "or a hub kernel (org/name)"
        )


def check_precision(cfg: Config) -> None:
    """`train.precision` fits the device and model.dtype (bf16: native bfloat16, no float16 weights)."""
    from grpolab.models.loading import pick_device, pick_dtype
    from grpolab.train.precision import resolve_precision

    device = pick_device(cfg.train.device)
    try:
        resolve_precision(cfg.train.precision, device, pick_dtype(cfg.model.dtype, device))
    except ValueError as err:
        raise PreflightError(str(err)) from None


# the configs that passed in this process: `grpolab train` checks before the training stack is
# imported, and the API call it then makes (the Python API's own entry) finds its config checked
_passed: set[str] = set()


def preflight(cfg: Config) -> None:
    """Everything that can be checked before the model loads (see the module docstring); once per
    config and process, so each entry path (command line or Python API) checks it once."""
    key = cfg.model_dump_json()
    if key in _passed:
        return
    if cfg.train.resume not in (None, "", "auto"):
        resolve_resume_path(Path(cfg.train.resume))
    check_device(cfg.train.device)
    check_precision(cfg)
    check_attention(cfg.model.attn_implementation)
    if Path(cfg.model.name).expanduser().is_dir():  # seconds before transformers would guess what is wrong
        check_model_dir(Path(cfg.model.name).expanduser(), adapter=False, what="model.name")
    check_writable(Path(cfg.train.output_dir), "train.output_dir")
    check_judges(cfg.rewards)
    _passed.add(key)


def prompt_lengths(tokenizer: Any, examples: list[Any], cfg: Config) -> list[int]:
    """Each example's prompt in tokens, whole (before generation.max_prompt_length cuts it)."""
    from grpolab.rollout.single_turn import full_prompt_ids

    return [len(full_prompt_ids(tokenizer, example, cfg.data)) for example in examples]


def report_long_prompts(lengths: list[int], cfg: Config, warn: Any = log.warning) -> int:
    """Count the prompts (their lengths in tokens) longer than generation.max_prompt_length and warn
    once with the count. Prompts are cut from the left (their start, with the system prompt, is
    dropped; the end of the question and the generation prompt are kept). Returns the count."""
    limit = cfg.generation.max_prompt_length
    long = [n for n in lengths if n > limit]
    if long:
        warn(
            f"{len(long)} of {len(lengths)} prompts are longer than generation.max_prompt_length={limit} "
            f"tokens (longest {max(long)}): their beginning is cut (left truncation keeps the end of the "
            "question); raise generation.max_prompt_length to keep them whole"
        )
    return len(long)
