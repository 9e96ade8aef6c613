"""`grpolab eval`: evaluate a base model, a run's checkpoint or a LoRA adapter on a task split."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from grpolab.api import run_splits
from grpolab.config.schema import Config
from grpolab.eval.evaluate import EvalResult, evaluate_examples, evaluation_reward_set
from grpolab.models.loading import pick_device
from grpolab.parallel.distributed import DistContext
from grpolab.rewards import build_rewards
from grpolab.train.build import build_parts
from grpolab.train.inputs import RunInputs, seed_everything


def print_result(result: EvalResult, split: str, console: Console | None = None) -> None:
    table = Table(title=f"evaluation on the {split} split")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics(split).items():
        table.add_row(key, f"{value:.4f}")
    (console or Console()).print(table)


def run_eval(cfg: Config, *, adapter: str | None, split: str) -> EvalResult:
    """The evaluation a training run does (same builder, same function, same rollout sampler: an agent
    preset runs its episodes with the tools), on the preset's model or another one, optionally with an
    adapter. The model is loaded as full weights with no reference: nothing is trained."""
    model = cfg.model.model_copy(update={"finetune": "full"})
    cfg = cfg.model_copy(update={"model": model, "grpo": cfg.grpo.model_copy(update={"beta": 0.0})})
    seed_everything(cfg.train.seed)
    rewards = build_rewards(cfg.rewards)
    splits = run_splits(cfg, None, None, None)  # the configured task's
    examples = splits.test if split == "test" else splits.val[: cfg.eval.size]
    inputs = RunInputs(splits, rewards, evaluation_reward_set(cfg, rewards), adapter=adapter)
    ctx = DistContext.single(pick_device(cfg.train.device))
    parts = build_parts(cfg, inputs, ctx, prompts=examples)
    status = f"evaluating {len(examples)} {split} questions"
    result = evaluate_examples(cfg, parts.rollouts, examples, parts.eval_rewards, ctx, status=status)
    print_result(result, split)
    return result
