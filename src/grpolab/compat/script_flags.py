"""The canonical arithmetic script's command line, and the eval config's, turned into plain overrides:

- the script's flags, with the script's meaning (`--batch_size` counts completions per step, as in
  the script and TRL, and must be divisible by the generations);
- the research journal's `--exp_name`, `--tags`, `--hypothesis`;
- a positional config path (`grpolab train path/to/eval_test_improved.yaml`, as the eval config's
  runner takes it).

cli/train_args.py declares the flags from these tables; cli/main.py applies the overrides after the
line's `key=value` ones: a flag is the more specific of the two.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import NamedTuple

from grpolab.compat.load import load_config, load_yaml
from grpolab.config.load import ConfigError, resolve_preset


class Flag(NamedTuple):
    """Where a flag's value lands. Values pass through verbatim; the config validates them with the key's name."""

    key: str
    help: str


SCRIPT_FLAGS: dict[str, Flag] = {
    "--dataset_type": Flag("data.task", "arithmetic | mixed | small_numbers"),
    "--n_samples": Flag("data.train_size", "number of training questions"),
    "--min_num": Flag("data.min_num", "smallest operand"),
    "--max_num": Flag("data.max_num", "largest operand"),
    "--num_generations": Flag("grpo.num_generations", "completions per question"),
    "--learning_rate": Flag("optim.lr", "peak learning rate"),
    "--temperature": Flag("generation.temperature", "sampling temperature of training rollouts"),
    "--epochs": Flag("train.epochs", "passes over the training questions"),
    "--beta": Flag("grpo.beta", "KL coefficient"),
    "--model_name": Flag("model.name", "model id, directory or 'tiny'"),
    "--seed": Flag("train.seed", "training seed"),
}
TEXT_FLAGS: dict[str, Flag] = {  # free text: quoted, so `a: b` stays a string
    "--exp_name": Flag("journal.exp_name", "experiment name (journal, W&B run name)"),
    "--hypothesis": Flag("journal.hypothesis", "what this run tests (journal, W&B notes)"),
}


def flag_dest(flag: str) -> str:
    return flag.lstrip("-")


SPLIT_SIZES = ("train_size", "val_size", "test_size")


def dataset_type_sizes(task: str | None) -> list[str]:
    """`--dataset_type T` brings the split sizes of preset T, which fit T's question space.

    The script drew `--n_samples` (default 100) unique questions of whichever type; a preset's sizes
    are for its own task (arithmetic's 1000 + 100 + 200 do not fit in small_numbers' 400 questions).
    They go before the line's `key=value` overrides and `--n_samples`, which still win.
    """
    if not task:
        return []
    tree = load_yaml(resolve_preset(task))
    data, evaluation = tree.get("data", {}), tree.get("eval", {})
    out = [f"data.{key}={json.dumps(data[key])}" for key in ("operations", *SPLIT_SIZES) if key in data]
    return out + ([f"eval.size={evaluation['size']}"] if "size" in evaluation else [])


def flag_overrides(args: argparse.Namespace) -> list[str]:
    script = {key: getattr(args, flag_dest(flag)) for flag, (key, _) in SCRIPT_FLAGS.items()}
    text = {key: getattr(args, flag_dest(flag)) for flag, (key, _) in TEXT_FLAGS.items()}
    out = [f"{key}={value}" for key, value in script.items() if value]
    out += [f"{key}={json.dumps(value)}" for key, value in text.items() if value]
    if args.tags:  # `--tags a b key=value`: the override is not a tag
        out.append(f"journal.tags={json.dumps([tag for tag in args.tags if '=' not in tag])}")
        out += [tag for tag in args.tags if "=" in tag]
    return out


def batch_size_overrides(batch_size: int, preset: str | None, overrides: list[str], flag_given: bool) -> list[str]:
    """`--batch_size N` (completions) as questions per step = N / G, with G as the config resolves it.

    As in the script (TRL's per_device_train_batch_size, no accumulation) the N completions go through
    one forward/backward pass (train.micro_batch_size=0), unless the line sets train.micro_batch_size.
    """
    # The micro-batch is checked against the final batch, not against the preset's one it replaces.
    generations = load_config(preset, [*overrides, "train.micro_batch_size=0"]).grpo.num_generations
    if batch_size <= 0 or batch_size % generations:
        name = "--num_generations" if flag_given else "grpo.num_generations"
        lower, upper = batch_size // generations * generations, (batch_size // generations + 1) * generations
        near = ", ".join(str(v) for v in (lower, upper) if v > 0)
        raise ConfigError(
            f"--batch_size ({batch_size}) must be divisible by {name} ({generations}): it counts completions, "
            f"questions x generations; values that work: {near}"
        )
    out = [f"train.questions_per_step={batch_size // generations}"]
    if not any(item.startswith("train.micro_batch_size=") for item in overrides):
        out.append("train.micro_batch_size=0")
    return out


def is_config_path(item: str) -> bool:
    """A positional `grpolab train path/to/config.yaml` (the eval config's way to name its config)."""
    return "=" not in item and bool(re.search(r"\.ya?ml$", item))


def split_config_path(config: str | None, items: list[str]) -> tuple[str | None, list[str]]:
    """(config, overrides): a positional `something.yaml` is the config, as `-c something.yaml` is."""
    paths = [item for item in items if is_config_path(item)]
    if not paths:
        return config, items
    if config or len(paths) > 1:
        raise ConfigError(f"two configs given: {', '.join([*([config] if config else []), *paths])}; keep one")
    return paths[0], [item for item in items if item != paths[0]]
