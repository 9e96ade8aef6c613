"""Key names of the setups our users come from, translated to ours before a config is built.

    optimizer.learning_rate=3e-6        agent-tunix (Hydra)       -> optim.lr=3e-6
    train_samples: 200                  eval config YAML (003)    -> data.train_size: 200
    seed=1  lr=1e-5                     short keys                -> train.seed=1  optim.lr=1e-5
    checkpoint_dir=DIR                  agent-tunix               -> train.resume=<latest step-N in DIR>
    training.num_batches=N training.num_epochs=E                  -> train.max_steps=N*E train.epochs=0
    rewards: [accuracy_reward, len_reward]  open-r1 (004)     -> rewards: [accuracy, length], metrics keep
                                                                 the names written (rewards/len_reward/mean)
    cosine_max_len: 500                 open-r1 script args      -> max_len: 500 on the cosine_scaled reward

    wandb_disabled=true                 agent-tunix               -> logging.wandb=false
    mode=masked                         the agent scripts         -> agent.mode=masked

Each alias keeps the meaning it had in its own tool (README, "Coming from ..."). Translation happens
in one place (`translate_overrides` for `key=value` items, `pop_aliases` for a YAML tree), bound into
the config loader by compat/load.py, so command lines, sweeps, presets and the user's own YAML files
all accept the same names; config/ itself reads only grpolab's names. This module imports nothing heavy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from grpolab.config.load import ConfigError, parse_value
from grpolab.config.openr1 import OPENR1_PARAMS
from grpolab.config.schema import Config

# foreign key -> our key, same meaning and unit.
ALIASES: dict[str, str] = {
    # agent-tunix (Hydra config groups). Tunix batches prompts: micro_batch_size prompts per batch,
    # each sampled num_generations times, so it is our B (questions per step), not our micro-batch.
    "optimizer.learning_rate": "optim.lr",
    "optimizer.warmup_ratio": "optim.warmup_ratio",
    "optimizer.max_grad_norm": "optim.max_grad_norm",
    "optimizer.weight_decay": "optim.weight_decay",
    "training.micro_batch_size": "train.questions_per_step",
    "training.save_interval_steps": "train.save_every",
    "generation.max_generation_steps": "generation.max_new_tokens",
    "model.mesh_shape": "distributed.mesh_shape",
    # the eval-improvement config (flat YAML keys of eval_test_improved.yaml)
    "train_samples": "data.train_size",
    "test_samples": "data.test_size",
    "learning_rate": "optim.lr",
    "num_epochs": "train.epochs",
    "beta": "grpo.beta",
    "temperature": "generation.temperature",
    "eval_temperature": "eval.temperature",
    "clip_eps": "grpo.epsilon",
    # open-r1's script argument that lists the rewards (GRPOScriptArguments.reward_funcs)
    "reward_funcs": "rewards",
}

# Keys config/load.apply_overrides understands as they are (model groups, open-r1's reward params).
PASS_THROUGH = {"model", *OPENR1_PARAMS}

# Short keys whose leaf name appears in several sections but that users mean one way: `seed` is the
# training seed (as SEED is), not data.seed (the split, kept fixed so seeds compare on one test set).
SHORT_KEYS = {"seed": "train.seed"}

# Tunix names the model by size inside one family (model.model_size: 270m).
TUNIX_MODEL_SIZES = {"270m": "gemma3_270m", "1b": "gemma3_1b"}

NUM_BATCHES, NUM_EPOCHS = "training.num_batches", "training.num_epochs"


def expand_short_key(key: str) -> str:
    """`lr` -> `optim.lr` when the leaf name is unique in the config tree; other keys unchanged."""
    if "." in key or key.startswith("+") or key in PASS_THROUGH:
        return key
    if key in SHORT_KEYS:
        return SHORT_KEYS[key]
    owners = [name for name, f in Config.model_fields.items() if key in getattr(f.annotation, "model_fields", {})]
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if owners:
        raise ConfigError(f"key '{key}' is ambiguous: {', '.join(f'{o}.{key}' for o in owners)}")
    return key  # a section name or unknown: load_config names the nearest valid key


def latest_checkpoint_in(directory: str) -> Path:
    """The newest `step-N` checkpoint in DIR, DIR/checkpoints, or DIR/*/checkpoints (Tunix's
    `checkpoint_dir=DIR`: "automatically detects and continues from the latest checkpoint")."""
    from grpolab.train.checkpoint import latest_checkpoint  # torch: only when a resume is asked for

    root = Path(directory).expanduser()
    candidates = [root, root / "checkpoints", *sorted(root.glob("*/checkpoints"), reverse=True)]
    for folder in candidates:
        found = latest_checkpoint(folder) if folder.is_dir() else None
        if found is not None:
            return found
    raise ConfigError(
        f"checkpoint_dir={directory}: no checkpoint (step-N folder) there, nor in its checkpoints/ "
        "or */checkpoints/; grpolab writes them to <train.output_dir>/<train.run_name>/<time>/checkpoints"
    )


def _as_int(key: str, value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(f"{key}: must be a whole number (got {value!r})") from None


def translate_overrides(items: list[str]) -> list[str]:
    """Every `key=value` with a foreign or short key rewritten to ours; the order is kept.

    >>> translate_overrides(["optimizer.learning_rate=3e-6", "seed=1", "grpo.beta=0.1"])
    ['optim.lr=3e-6', 'train.seed=1', 'grpo.beta=0.1']
    >>> translate_overrides(["training.num_epochs=2", "training.num_batches=10"])
    ['train.max_steps=20', 'train.epochs=0']
    """
    pairs = [item.split("=", 1) if "=" in item else [item] for item in items]
    keys = [pair[0].strip() for pair in pairs]
    # Tunix trains num_batches batches num_epochs times over (num_epochs defaults to 1 there).
    batches = [p[1] for p in pairs if len(p) == 2 and p[0].strip().lstrip("+") == NUM_BATCHES]
    epochs = [p[1] for p in pairs if len(p) == 2 and p[0].strip().lstrip("+") == NUM_EPOCHS]
    out: list[str] = []
    for pair, key in zip(pairs, keys):
        if len(pair) == 1 or key.startswith("+experiment"):
            out.append("=".join(pair))
            continue
        value = pair[1]
        bare = key.lstrip("+")
        if bare == NUM_BATCHES:
            steps = _as_int(NUM_BATCHES, value) * (_as_int(NUM_EPOCHS, epochs[-1]) if epochs else 1)
            out += [f"train.max_steps={steps}", "train.epochs=0"]
        elif bare == NUM_EPOCHS:
            if not batches:  # with num_batches the product above already holds the epochs
                out.append(f"train.epochs={value}")
        elif bare == "checkpoint_dir":
            out.append(f"train.resume={latest_checkpoint_in(value)}")
        elif bare == "model.model_size":
            group = TUNIX_MODEL_SIZES.get(str(value).strip().lower())
            if group is None:
                raise ConfigError(f"model.model_size: known sizes are {', '.join(TUNIX_MODEL_SIZES)} (got {value!r})")
            out.append(f"model={group}")
        elif bare == "wandb_disabled":  # the switch Tunix users know
            out.append(f"logging.wandb={json.dumps(not bool(parse_value(value)))}")
        elif bare == "mode":  # `--mode masked|full` shortcut of agent users
            out.append(f"agent.mode={value}")
        elif bare in ALIASES:
            out.append(f"{ALIASES[bare]}={value}")
        else:
            out.append(f"{expand_short_key(key)}={value}")
    return out


def _as_text(value: Any) -> str:
    """A parsed YAML value back as override text that parses to the same value."""
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def pop_aliases(tree: dict[str, Any]) -> list[str]:
    """Remove foreign keys from a YAML tree (flat `train_samples: 200` or nested `optimizer:
    {learning_rate: ...}`) and return them as overrides for `apply_overrides`."""
    found: list[str] = []
    foreign = [*ALIASES, NUM_BATCHES, NUM_EPOCHS, "checkpoint_dir", "model.model_size", *OPENR1_PARAMS]
    for dotted in foreign:
        *parents, leaf = dotted.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        found.append(f"{dotted}={_as_text(node.pop(leaf))}")
        if parents and not node and parents[0] not in Config.model_fields:
            tree.pop(parents[0], None)  # an emptied foreign section (optimizer:, training:)
    return found
