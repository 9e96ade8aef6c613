"""`grpolab eval`: evaluate a base model, a run's checkpoint or a LoRA adapter on a task split."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from grpolab.config.schema import Config
from grpolab.data import build_splits
from grpolab.eval.evaluate import EvalResult, evaluate_examples, evaluation_reward_set
from grpolab.models.loading import load_model, pick_device
from grpolab.rewards import build_rewards
from grpolab.rollout.generators import build_generator
from grpolab.rollout.sampler import RolloutSampler
from grpolab.train.inputs import seed_everything
from grpolab.train.preflight import report_long_prompts


def attach_adapter(model: Any, adapter: str) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter).eval()


def print_result(result: EvalResult, split: str, console: Console | None = None) -> None:
    table = Table(title=f"evaluation on the {split} split")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics(split).items():
        table.add_row(key, f"{value:.4f}")
    (console or Console()).print(table)


def run_eval(cfg: Config, *, adapter: str | None, split: str) -> EvalResult:
    """The evaluation a training run does (same function, same rollout sampler: an agent preset runs
    its episodes with the tools), on the preset's model or another one, optionally with an adapter."""
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    loaded = load_model(cfg.model.model_copy(update={"finetune": "full"}), beta=0.0, device=device)
    model = attach_adapter(loaded.model, adapter) if adapter else loaded.model
    splits = build_splits(cfg.data, cfg.data.seed)
    examples = splits.test if split == "test" else splits.val[: cfg.eval.size]
    report_long_prompts(loaded.tokenizer, examples, cfg)  # left-truncated prompts: counted, said once
    generator = build_generator(cfg, model, loaded.tokenizer.pad_token_id, loaded.stop_ids, seed=cfg.train.seed)
    sampler = RolloutSampler(cfg, generator, loaded.tokenizer, loaded.stop_ids)
    rewards = evaluation_reward_set(cfg, build_rewards(cfg.rewards))
    result = evaluate_examples(cfg, sampler, examples, rewards, status=f"evaluating {len(examples)} {split} questions")
    print_result(result, split)
    return result
