"""The Python API: a notebook's model, dataset and reward functions in, a trained model out.

    from grpolab import GRPOConfig, GRPOTrainer

    def short(completions, **kwargs):               # TRL's signature; one float (or None) per sample
        return [1.0 if len(c[0]["content"]) < 20 else 0.0 for c in completions]

    trainer = GRPOTrainer(model="tiny", reward_funcs=[short, "answer_format"], train_dataset=dataset,
                          args=GRPOConfig(train={"max_steps": 20}))
    summary = trainer.train()                       # RunSummary: run_dir, status, best step, before/after
    trainer.evaluate(test_rows)                     # {"eval/accuracy": ..., "eval/format": ...}
    trainer.save_model("my-model")

TRL's flat names work as well: `GRPOConfig(learning_rate=1e-6, per_device_train_batch_size=8)`
(translated in grpolab/compat/). `grpolab train -c PRESET` is `run_training(cfg)` below: it builds
the same objects from the config (splits of the configured task, the configured rewards) and calls
the same `GRPOTrainer`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr, ValidationError

from grpolab.compat.load import load_config
from grpolab.compat.trl_translate import is_trl_name, load_flat, merge_flat, processing_class_argument, unknown_key
from grpolab.config.load import ConfigError, check_keys, format_validation_error
from grpolab.config.schema import Config, RewardsConfig, RewardSpec
from grpolab.data import build_splits
from grpolab.data.base import DataError, Example, Splits, check_reward_columns
from grpolab.data.inline import examples_from_rows
from grpolab.eval.evaluate import evaluation_reward_set
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.lifecycle import failure_guard
from grpolab.parallel.sharding import refuse_deepspeed
from grpolab.rewards import RewardInputs, RewardSet, build_rewards
from grpolab.rewards.api import BoundReward
from grpolab.rewards.registry import build_one
from grpolab.train.inputs import RunInputs
from grpolab.train.state import RunSummary
from grpolab.train.trainer import Trainer

__all__ = ["GRPOConfig", "GRPOTrainer", "RunSummary", "run_training"]

RewardFunc = Callable[..., Any] | str


class GRPOConfig(Config):
    """grpolab's config tree (`grpolab.config.schema.Config`, what a YAML preset fills) under the name
    TRL users look for. Set any field by section, or load a preset with dotted overrides:

        GRPOConfig(train={"max_steps": 20}, grpo={"num_generations": 4, "beta": 0.0})
        GRPOConfig.load("quick_test", "train.max_steps=20", grpo__beta=0.0)

    A bad value is a `ConfigError` with one line naming the field, as on the command line."""

    # TRL's reward_weights: a GRPOConfig argument there, the weights of GRPOTrainer's reward_funcs here
    _reward_weights: list[float] | None = PrivateAttr(None)

    def __init__(self, **sections: Any) -> None:
        flat = {key: sections.pop(key) for key in list(sections) if key not in Config.model_fields and is_trl_name(key)}
        for key in sections:
            if key not in Config.model_fields:
                raise unknown_key(key)
        check_keys(sections)
        weights = None
        if flat:  # TRL's flat names (learning_rate=..., per_device_train_batch_size=...), see compat/
            sections, weights = merge_flat(sections, flat)
        try:
            super().__init__(**sections)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err)) from None
        self._reward_weights = weights

    @classmethod
    def load(cls, preset: str | None = "default", *overrides: str, **dotted: Any) -> GRPOConfig:
        """A preset plus `key.sub=value` overrides (or keywords with `__` for the dots), and TRL's
        flat names as keywords (`learning_rate=1e-6`). Unlike the command line, .env and environment
        variables are not read: a script means what it says."""
        flat = {key: dotted.pop(key) for key in list(dotted) if is_trl_name(key)}
        pairs = [*overrides, *(f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in dotted.items())]
        cfg = load_config(preset, pairs, env_file=None, environ={})
        weights = None
        if flat:
            reload = lambda more: load_config(preset, more, env_file=None, environ={})  # noqa: E731
            cfg, weights = load_flat(cfg, flat, reload, pairs)
        out = cls.model_validate(cfg.model_dump())
        out._reward_weights = weights
        return out


def _label(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__))


def _as_list(reward_funcs: Sequence[RewardFunc] | RewardFunc) -> list[RewardFunc]:
    if isinstance(reward_funcs, (list, tuple)):
        return list(reward_funcs)
    return [reward_funcs]  # type: ignore[list-item]


def reward_set(
    cfg: Config, reward_funcs: Sequence[RewardFunc] | RewardFunc, weights: Sequence[float] | None
) -> RewardSet:
    """Callables (TRL's signature; defined anywhere, no import path needed) and built-in names."""
    funcs = _as_list(reward_funcs)
    if not funcs:
        raise ConfigError("reward_funcs: give at least one reward function")
    weights = list(weights) if weights is not None else [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ConfigError(f"reward_weights: {len(weights)} weights for {len(funcs)} reward_funcs")
    bound: list[BoundReward] = []
    for index, (fn, weight) in enumerate(zip(funcs, weights)):
        if isinstance(fn, str):
            spec = RewardSpec(fn=fn, weight=weight) if ":" in fn else RewardSpec(name=fn, weight=weight)
            bound.append(build_one(spec))
        elif callable(fn):
            bound.append(BoundReward(_label(fn), fn, float(weight), {}))
        else:
            raise ConfigError(f"reward_funcs[{index}]: expected a function or a built-in reward name, got {fn!r}")
    labels = [b.label for b in bound]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise ConfigError(f"reward_funcs: two rewards are called '{dupes[0]}'; give each function its own name")
    return RewardSet(bound, on_error=cfg.rewards.on_error, timeout_s=cfg.rewards.timeout_s)


def _recorded(funcs: Sequence[RewardFunc], weights: Sequence[float] | None) -> RewardsConfig:
    """What config.yaml records for rewards given as objects (module:qualname of a callable)."""
    specs = []
    for index, weight in enumerate(weights or []):  # a NaN weight would turn every reward into NaN
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"reward_weights[{index}]: {weight!r} is not a finite number")
    for fn, weight in zip(funcs, weights or [1.0] * len(funcs)):
        if isinstance(fn, str):
            specs.append(RewardSpec(fn=fn, weight=weight) if ":" in fn else RewardSpec(name=fn, weight=weight))
        else:
            where = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', _label(fn))}"
            specs.append(RewardSpec(fn=where, weight=weight))
    return RewardsConfig(functions=specs)


def _examples(dataset: Any, cfg: Config, name: str) -> list[Example]:
    rows = list(dataset)
    if rows and all(isinstance(row, Example) for row in rows):
        return rows
    return examples_from_rows(rows, cfg.data, name)


def run_splits(cfg: Config, train_dataset: Any, eval_dataset: Any, test_dataset: Any) -> Splits:
    """train/val/test. No eval_dataset: as in TRL, nothing is held out and nothing is evaluated, unless
    args set data.val_size or data.test_size: then those rows are held out of train_dataset (seeded by
    data.seed). eval_dataset without test_dataset: it serves as both."""
    if train_dataset is None:
        if eval_dataset is not None or test_dataset is not None:
            raise DataError("eval_dataset/test_dataset given without a train_dataset")
        return build_splits(cfg.data, cfg.data.seed)
    train = _examples(train_dataset, cfg, "train_dataset")
    val = _examples(eval_dataset, cfg, "eval_dataset") if eval_dataset is not None else None
    test = _examples(test_dataset, cfg, "test_dataset") if test_dataset is not None else None
    asked = {"val_size", "test_size"} & cfg.data.model_fields_set
    if val is None and test is None and not asked:
        return Splits(train=train, val=[], test=[])
    if val is None and test is None:
        held_out = cfg.data.val_size + cfg.data.test_size
        if len(train) <= held_out:
            raise DataError(
                f"train_dataset has {len(train)} rows: too few to hold out data.val_size ({cfg.data.val_size}) + "
                f"data.test_size ({cfg.data.test_size}) for evaluation; pass an eval_dataset or lower them"
            )
        order = list(range(len(train)))
        random.Random(cfg.data.seed).shuffle(order)
        test = [train[i] for i in order[: cfg.data.test_size]]
        val = [train[i] for i in order[cfg.data.test_size : held_out]]
        train = [train[i] for i in sorted(order[held_out:])]
    return Splits(train=train, val=val or test or [], test=test or val or [])


def _check_columns(cfg: Config, rewards: RewardSet, eval_rewards: RewardSet, splits: Splits) -> None:
    """Fail now, not at the first step, when a reward needs a column the dataset (or one row) does not
    have, or a step needs more questions than the training set holds. The evaluation's rewards
    (correctness, format) only matter when there is something to evaluate."""
    for reward_set, examples in ((rewards, splits.train), (eval_rewards, splits.val)):
        if not examples:
            continue
        row = examples[0].row()
        inputs = RewardInputs(prompts=[""], completions=[""], completion_ids=[[]], rows=[row])
        for reward in reward_set.rewards:
            reward.call_kwargs(inputs.keywords())  # RewardError naming the missing column
    if cfg.train.questions_per_step > len(splits.train):
        raise ConfigError(
            f"train.questions_per_step ({cfg.train.questions_per_step}) is larger than the training set "
            f"({len(splits.train)} questions); lower it, or give more training data"
        )
    needs = {r.label: r.needed_columns() for r in rewards.rewards}
    check_reward_columns([*splits.train, *splits.val, *splits.test], needs)  # each row, not just the first
    if not splits.evaluates:
        return
    correctness = cfg.eval.correctness_reward
    if correctness not in rewards.labels and not any(example.answer for example in splits.val):
        raise ConfigError(
            f"eval.correctness_reward: the built-in '{correctness}' compares completions with an 'answer' "
            f"column, which the evaluation data lacks; add one, or set args.eval.correctness_reward to one "
            f"of your rewards ({', '.join(rewards.labels)})"
        )


class GRPOTrainer:
    """GRPO on a model with reward functions; see the module docstring and README "Python API".

    model: "tiny", a local directory or hub id, or a loaded transformers model (with
        `processing_class` (or `tokenizer`), its tokenizer; else loaded from the model's name_or_path).
    reward_funcs: callables `fn(prompts, completions, completion_ids, **columns) -> list[float | None]`
        and built-in names ("numeric", "answer_format", ...), weighted by `reward_weights`.
        None: args.rewards (what a preset configures).
    train_dataset / eval_dataset / test_dataset: a `datasets.Dataset` or a list of dicts with a
        "prompt" column (see grpolab.data.inline); None: the task configured in args.data.
    args: a GRPOConfig (or any grpolab Config). environment: an Environment class or factory (one
        instance per episode) for tool-using agents. peft_config: a peft LoraConfig (LoRA training).
    tools / environment_factory: TRL's tool API instead of `environment` (functions as tools; a class
        whose methods are tools, or a dict of them picked by the `environment` column); see
        envs/trl_tools.py and README "Tools and environments (TRL's API)".
    """

    def __init__(
        self,
        model: str | Any = None,
        reward_funcs: Sequence[RewardFunc] | RewardFunc | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        args: Config | None = None,
        environment: Any = None,
        peft_config: Any = None,
        processing_class: Any = None,
        *,
        reward_weights: Sequence[float] | None = None,
        test_dataset: Any = None,
        tokenizer: Any = None,
        tools: Sequence[Callable[..., Any]] | None = None,
        environment_factory: Any = None,
    ) -> None:
        processing_class = processing_class_argument(processing_class, tokenizer)
        cfg = args if args is not None else GRPOConfig()
        trl_env = None
        if tools or environment_factory is not None:
            from grpolab.envs.trl_tools import build_trl_environment

            if environment is not None:
                raise ConfigError("environment: give grpolab's `environment` or TRL's tools/environment_factory")
            trl_env = build_trl_environment(tools, environment_factory, cfg.agent.tool_timeout_s)
            environment = trl_env.env_factory
        if reward_weights is None:  # TRL passes them in its GRPOConfig
            reward_weights = getattr(cfg, "_reward_weights", None)
            if reward_weights is not None and reward_funcs is None:
                raise ConfigError("reward_weights (in args) weighs reward_funcs=; give GRPOTrainer the functions too")
        update: dict[str, Any] = {}
        model_object = None
        if isinstance(model, (str, Path)):
            update["model"] = cfg.model.model_copy(update={"name": str(model)})
        elif model is not None:
            if not hasattr(model, "parameters"):  # else it would be looked up as a hub id, and fail there
                raise ConfigError(f"model: expected a name, a directory or a loaded model, got {model!r:.60}")
            model_object = model
            name = getattr(model, "name_or_path", "") or cfg.model.name
            update["model"] = cfg.model.model_copy(update={"name": str(name)})
        if peft_config is not None:
            if not isinstance(getattr(peft_config, "r", 1), int) or getattr(peft_config, "r", 1) <= 0:
                raise ConfigError(f"peft_config: r (the LoRA rank) must be a positive integer, got {peft_config.r!r}")
            lora = {"finetune": "lora", "lora_rank": getattr(peft_config, "r", cfg.model.lora_rank)}
            update["model"] = update.get("model", cfg.model).model_copy(update=lora)
        if environment is not None:
            if not callable(environment):
                raise ConfigError("environment: pass the class (or a function that makes one), not an instance")
            update["agent"] = cfg.agent.model_copy(update={"enabled": True})
        if reward_funcs is not None:
            update["rewards"] = _recorded(_as_list(reward_funcs), reward_weights)
        self.args: Config = cfg.model_copy(update=update) if update else cfg

        refuse_deepspeed()  # before any process group or model
        self.ctx = DistContext.from_env(self.args.distributed, self.args.train.device)
        with failure_guard(self.ctx):
            cfg = self.args
            rewards = (
                build_rewards(cfg.rewards) if reward_funcs is None else reward_set(cfg, reward_funcs, reward_weights)
            )
            if trl_env is not None:
                from grpolab.rewards.environment import with_environment_rewards

                rewards = with_environment_rewards(rewards, trl_env, reward_funcs is not None)
            splits = run_splits(cfg, train_dataset, eval_dataset, test_dataset)
            if trl_env is not None:
                for split, examples in (("train", splits.train), ("eval", splits.val), ("test", splits.test)):
                    trl_env.check_rows([e.row() for e in examples], f"{split}_dataset")
            eval_rewards = evaluation_reward_set(cfg, rewards)
            _check_columns(cfg, rewards, eval_rewards, splits)
            tokenizer = None
            if model_object is not None:
                from grpolab.models.loading import load_tokenizer

                tokenizer = processing_class or load_tokenizer(cfg.model.name, cfg.model)
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                tokenizer.padding_side = "left"
            inputs = RunInputs(splits, rewards, eval_rewards, model_object, tokenizer, peft_config, environment)
            self.trainer = Trainer(cfg, inputs, self.ctx)

    def train(self) -> RunSummary:
        """The whole run (resumes when args.train.resume is set); returns its summary."""
        with failure_guard(self.ctx):
            return self.trainer.run()

    def evaluate(self, dataset: Any = None, split: str = "val") -> dict[str, float]:
        """Metrics of the model as it is now on `dataset`, or on the run's val or test split
        (greedy accuracy, format rate, pass@k when args.eval.pass_k is set, per category)."""
        if dataset is not None:
            examples = _examples(dataset, self.args, "dataset")
        elif split in ("val", "test"):
            examples = self.trainer.val if split == "val" else self.trainer.splits.test
            if not examples:
                raise DataError("nothing to evaluate: pass eval_dataset= to GRPOTrainer, or a dataset to evaluate()")
        else:
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return self.trainer.evaluate(examples).metrics("eval" if split == "val" else split)

    def save_model(self, output_dir: str | Path) -> None:
        """The model as it is now (full weights, or the LoRA adapter) and its tokenizer."""
        self.trainer.save_model(Path(output_dir))

    def close(self) -> None:
        """Free the generation engine (vLLM's KV cache and weight copy), unlock the run directory and
        leave the process group (under torchrun / accelerate launch)."""
        close_engine = getattr(self.trainer.generator, "close", None)
        if close_engine is not None:
            close_engine()
        self.trainer.run_lock.release()  # a trainer built but never trained held its run directory
        self.ctx.close()


def run_training(cfg: Config) -> RunSummary:
    """`grpolab train`: the configured task's splits and rewards, through the same GRPOTrainer.
    Under torchrun / accelerate launch, one call per rank (see docs/distributed.md)."""
    trainer = GRPOTrainer(model=cfg.model.name, reward_funcs=None, args=cfg)  # no datasets: cfg.data; cfg.rewards
    try:
        return trainer.train()
    finally:
        trainer.close()
