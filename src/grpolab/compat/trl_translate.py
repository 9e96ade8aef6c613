"""TRL's flat `GRPOConfig(learning_rate=..., num_generations=...)` keywords onto grpolab's tree.

    translate({"learning_rate": 1e-6, "per_device_train_batch_size": 8, "num_generations": 4}, current)
      -> {"optim.lr": 1e-6, "grpo.num_generations": 4, "train.questions_per_step": 2,
          "train.micro_batch_size": 8}                       (one process, no accumulation)

One-to-one names follow their `TrlArg` row (`trl_args.py`). A few TRL arguments only mean something
together and are translated here as a group: the batch sizes (TRL counts completions per device,
grpolab questions per step), use_vllm + vllm_mode, the vLLM server's host and port, report_to,
max_steps with num_train_epochs, warmup_steps (a ratio in grpolab), model_init_kwargs and reward_weights.
A TRL or transformers argument grpolab does not offer is accepted at its default value and is
otherwise one ConfigError line; two names that set one key differently are an error naming both.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from grpolab.compat.seeds import expand_short_key
from grpolab.compat.trl_args import KEEP, TRL_ARGS
from grpolab.config.load import ConfigError, unknown_top_key
from grpolab.config.schema import Config

Current = Callable[[str], Any]  # grpolab dotted key -> the value it has without the TRL names
Settings = dict[str, tuple[Any, str]]  # grpolab dotted key -> (value, the TRL names that set it)

TRL_DEFAULT_BATCH = 8  # TRL's (transformers') per_device_train_batch_size when a script leaves it out


@functools.cache
def training_arguments_defaults() -> dict[str, Any]:
    """transformers.TrainingArguments' fields and defaults (imported only to judge a name outside the table)."""
    import dataclasses

    from transformers import TrainingArguments

    out = {}
    for f in dataclasses.fields(TrainingArguments):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def is_trl_name(key: str) -> bool:
    if key in TRL_ARGS:
        return True
    if key in Config.model_fields or "." in key or "__" in key:
        return False
    return key in training_arguments_defaults()


def _set(settings: Settings, key: str, value: Any, name: str) -> None:
    if value is KEEP:
        return
    if key in settings and settings[key][0] != value:
        other_value, other = settings[key]
        raise ConfigError(
            f"GRPOConfig: {name} and {other} disagree on {key} ({value!r} vs {other_value!r}); give one of them"
        )
    settings[key] = (value, f"{settings[key][1]}, {name}" if key in settings else name)


BATCH_NAMES = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "generation_batch_size",
    "steps_per_generation",
)


def _batch(flat: dict[str, Any], current: Current, settings: Settings) -> None:
    """TRL: one optimizer step takes gradient_accumulation_steps micro-steps of per_device_train_batch_size
    completions on each of W processes, and generation_batch_size = those completions when
    steps_per_generation = gradient_accumulation_steps (its default). grpolab generates once per step."""
    if not any(flat.get(n) is not None for n in BATCH_NAMES):
        return
    per_device = flat.get("per_device_train_batch_size")
    accumulation = flat.get("gradient_accumulation_steps") or 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_generation = flat.get("steps_per_generation")
    if steps_per_generation is not None and steps_per_generation != accumulation:
        raise ConfigError(
            f"GRPOConfig: steps_per_generation ({steps_per_generation}) must equal gradient_accumulation_steps "
            f"({accumulation}): grpolab generates once per optimizer step"
        )
    generation_batch = flat.get("generation_batch_size")
    step_batch = (per_device or TRL_DEFAULT_BATCH) * world * accumulation
    if generation_batch is not None and per_device is not None and generation_batch != step_batch:
        raise ConfigError(
            f"GRPOConfig: generation_batch_size ({generation_batch}) must equal one optimizer step's completions, "
            f"per_device_train_batch_size x processes x gradient_accumulation_steps = {step_batch}: grpolab "
            "generates once per optimizer step"
        )
    completions = generation_batch if generation_batch is not None and per_device is None else step_batch
    key = "grpo.num_generations"
    group = settings[key][0] if key in settings else current(key)
    if completions % group:
        works = [n for n in range(group, 4 * group + 1, group)]
        raise ConfigError(
            f"GRPOConfig: per_device_train_batch_size x processes ({world}) x gradient_accumulation_steps = "
            f"{completions} completions per step, not divisible by num_generations ({group}); completions per "
            f"step that work: {', '.join(map(str, works))}, ..."
        )
    given = ", ".join(n for n in BATCH_NAMES if flat.get(n) is not None)
    _set(settings, "train.questions_per_step", completions // group, given)
    if per_device is not None:
        _set(settings, "train.micro_batch_size", per_device, "per_device_train_batch_size")


def _vllm(flat: dict[str, Any], settings: Settings) -> None:
    if "use_vllm" in flat:
        mode = flat.get("vllm_mode") or "colocate"  # TRL 1.16's default
        backends = {"colocate": "vllm", "server": "vllm_server"}
        if mode not in backends:
            raise ConfigError(f"GRPOConfig: vllm_mode must be 'colocate' or 'server', got {mode!r}")
        _set(settings, "generation.backend", backends[mode] if flat["use_vllm"] else "hf", "use_vllm")
    if flat.get("vllm_server_base_url"):
        _set(settings, "generation.vllm_server_url", flat["vllm_server_base_url"], "vllm_server_base_url")
    elif "vllm_server_host" in flat or "vllm_server_port" in flat:
        host, port = flat.get("vllm_server_host", "0.0.0.0"), flat.get("vllm_server_port", 8000)
        _set(settings, "generation.vllm_server_url", f"http://{host}:{port}", "vllm_server_host/port")


def _report_to(value: Any, settings: Settings) -> None:
    given = [value] if isinstance(value, str) or value is None else list(value)
    names = [str(n).lower() for n in given if n is not None]
    unknown = [n for n in names if n not in ("none", "all", "tensorboard", "wandb")]
    if unknown:
        raise ConfigError(
            f"GRPOConfig: report_to={value!r}: grpolab reports to tensorboard and wandb only (not {', '.join(unknown)})"
        )
    _set(settings, "logging.tensorboard", "tensorboard" in names or "all" in names, "report_to")
    _set(settings, "logging.wandb", "wandb" in names, "report_to")


def _warmup_steps(value: Any, flat: dict[str, Any], current: Current, settings: Settings) -> None:
    if not value:
        return
    if value < 1:  # transformers 5: a warmup_steps below 1 is a ratio of the run
        _set(settings, "optim.warmup_ratio", float(value), "warmup_steps")
        return
    steps = settings["train.max_steps"][0] if "train.max_steps" in settings else current("train.max_steps")
    ratio = value / steps
    while math.ceil(ratio * steps) > value:  # grpolab warms up ceil(ratio x steps) steps: no extra step from rounding
        ratio = math.nextafter(ratio, 0.0)
    _set(settings, "optim.warmup_ratio", min(ratio, 1.0), "warmup_steps")


MODEL_INIT_KEYS = {
    "dtype": "model.dtype",
    "torch_dtype": "model.dtype",
    "attn_implementation": "model.attn_implementation",
    "revision": "model.revision",
    "trust_remote_code": "model.trust_remote_code",
}


def _model_init_kwargs(value: Any, settings: Settings) -> None:
    """from_pretrained's keywords that grpolab's model section has; a torch.dtype is named by its text."""
    for key, item in (value or {}).items():
        if key not in MODEL_INIT_KEYS:
            raise ConfigError(
                f"GRPOConfig: model_init_kwargs[{key!r}] is not offered by grpolab (it takes "
                f"{', '.join(MODEL_INIT_KEYS)}); load the model yourself and pass model=<the loaded model>"
            )
        if MODEL_INIT_KEYS[key] == "model.dtype":
            item = str(item).removeprefix("torch.")
        _set(settings, MODEL_INIT_KEYS[key], item, f"model_init_kwargs[{key!r}]")


JOINT = {
    "per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size", "steps_per_generation",
    "use_vllm", "vllm_mode", "vllm_server_base_url", "vllm_server_host", "vllm_server_port",
    "report_to", "warmup_steps", "reward_weights", "model_init_kwargs",
}  # fmt: skip


def _one(name: str, value: Any, settings: Settings) -> None:
    row = TRL_ARGS.get(name)
    if row is None:  # a transformers TrainingArguments option outside the table
        if value != training_arguments_defaults()[name]:
            raise ConfigError(
                f"GRPOConfig: {name}={value!r} is a transformers TrainingArguments option that grpolab does not offer"
            )
        return
    if row.target is None:
        if value not in row.accepts:
            detail = row.note.removeprefix("not offered").strip(" ;")
            detail = f" {detail}" if detail.startswith("(") else f"; {detail}" if detail else ""
            raise ConfigError(f"GRPOConfig: TRL's {name}={value!r} is not offered by grpolab{detail}")
        return
    try:
        converted = row.convert(value) if row.convert is not None else value
    except ValueError as err:
        raise ConfigError(f"GRPOConfig: {err}") from None
    _set(settings, row.target, converted, name)


def translate(flat: dict[str, Any], current: Current) -> tuple[Settings, list[float] | None]:
    """grpolab keys set by TRL's names in `flat`, and TRL's reward_weights (a GRPOTrainer matter)."""
    flat = dict(flat)
    max_steps = flat.get("max_steps")
    if max_steps is not None and max_steps > 0:
        flat.pop("num_train_epochs", None)  # TRL: max_steps > 0 wins over num_train_epochs
    settings: Settings = {}
    for name, value in flat.items():
        if name not in JOINT:
            _one(name, value, settings)
    _batch(flat, current, settings)
    _vllm(flat, settings)
    if "report_to" in flat:
        _report_to(flat["report_to"], settings)
    _warmup_steps(flat.get("warmup_steps"), flat, current, settings)
    _model_init_kwargs(flat.get("model_init_kwargs"), settings)
    weights = flat.get("reward_weights")
    return settings, None if weights is None else [float(w) for w in weights]


# -- the API's side: nested sections plus flat names ------------------------------------------------
def default_value(dotted: str) -> Any:
    section, _, leaf = dotted.partition(".")
    field = Config.model_fields[section].annotation.model_fields[leaf]  # type: ignore[union-attr]
    return field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]


def _plain(section: Any) -> Any:
    return section.model_dump(exclude_unset=True) if isinstance(section, BaseModel) else section


def explicit_values(sections: dict[str, Any]) -> dict[str, Any]:
    """section.key -> value for every leaf the nested keywords set (rewards are a list: left out)."""
    out = {}
    for section, body in sections.items():
        body = _plain(body)
        if section != "rewards" and isinstance(body, dict):
            out.update({f"{section}.{key}": value for key, value in body.items()})
    return out


def conflict(name: str, key: str, value: Any, nested: Any) -> ConfigError:
    return ConfigError(
        f"GRPOConfig: {name}={value!r} (TRL's name for {key}) conflicts with {key}={nested!r}; give one of them"
    )


def merge_flat(sections: dict[str, Any], flat: dict[str, Any]) -> tuple[dict[str, Any], list[float] | None]:
    """`GRPOConfig(**kwargs)`: the nested sections with the flat TRL names merged in."""
    explicit = explicit_values(sections)
    settings, weights = translate(flat, lambda key: explicit[key] if key in explicit else default_value(key))
    merged = {name: _plain(body) for name, body in sections.items()}
    for key, (value, names) in settings.items():
        if key in explicit and explicit[key] != value:
            raise conflict(names, key, value, explicit[key])
        section, _, leaf = key.partition(".")
        merged[section] = {**merged.get(section, {}), leaf: value}
    return merged, weights


def load_flat(
    cfg: Config, flat: dict[str, Any], reload: Callable[[list[str]], Config], pairs: list[str]
) -> tuple[Config, list[float] | None]:
    """`GRPOConfig.load(preset, *pairs, **flat)`: the preset's values are what TRL's names override
    (as the command line does); a key also set by `pairs` must agree."""

    def current(key: str) -> Any:
        section, _, leaf = key.partition(".")
        return getattr(getattr(cfg, section), leaf)

    settings, weights = translate(flat, current)
    explicit = set()
    for pair in pairs:
        key = pair.split("=", 1)[0].strip().lstrip("+")
        try:
            explicit.add(expand_short_key(key))
        except ConfigError:
            continue  # an ambiguous short key: load_config has already said so
    for key, (value, names) in settings.items():
        if key in explicit and current(key) != value:
            raise conflict(names, key, value, current(key))
    return reload([*pairs, *(f"{key}={json.dumps(value)}" for key, (value, _) in settings.items())]), weights


def unknown_key(key: str, flat_trl: bool = True) -> ConfigError:
    """An unknown top-level key, with TRL's name pointing at its key (and, where TRL's flat names
    are accepted, TRL's names among the near ones)."""
    row = TRL_ARGS.get(key)
    trl = " nor a TRL GRPOConfig argument (README, 'Coming from another tool')" if flat_trl else ""
    return unknown_top_key(key, row.target if row else None, list(TRL_ARGS) if flat_trl else [], trl)


def processing_class_argument(processing_class: Any, tokenizer: Any) -> Any:
    """GRPOTrainer's `processing_class`, or `tokenizer`: TRL's older name for the same argument."""
    return processing_class or tokenizer
