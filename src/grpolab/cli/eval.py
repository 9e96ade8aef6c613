"""`grpolab eval`: evaluate a base model, a run's checkpoint or a LoRA adapter on a task split."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from grpolab.config.schema import Config
from grpolab.data import build_splits
from grpolab.eval.evaluate import EvalResult, evaluate
from grpolab.models.loading import load_model, pick_device
from grpolab.rewards import build_rewards
from grpolab.rollout.generators import build_generator
from grpolab.rollout.single_turn import prompt_ids
from grpolab.train.trainer import evaluation_rewards, seed_everything


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
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    loaded = load_model(cfg.model.model_copy(update={"finetune": "full"}), beta=0.0, device=device)
    model = attach_adapter(loaded.model, adapter) if adapter else loaded.model
    splits = build_splits(cfg.data, cfg.data.seed)
    examples = splits.test if split == "test" else splits.val[: cfg.eval.size]
    e = cfg.eval
    result = evaluate(
        build_generator(cfg, model, loaded.tokenizer.pad_token_id, loaded.stop_ids, seed=cfg.train.seed),
        loaded.tokenizer,
        examples,
        lambda ex: prompt_ids(loaded.tokenizer, ex, cfg.data, cfg.generation.max_prompt_length),
        build_rewards(evaluation_rewards(cfg)),
        max_new_tokens=cfg.generation.max_new_tokens,
        batch_size=e.batch_size,
        pass_k=e.pass_k,
        num_samples=e.num_samples or max(e.pass_k, default=0),
        temperature=e.temperature,
        top_p=cfg.generation.top_p,
        format_reward=e.format_reward,
        correctness_reward=e.correctness_reward,
        stop_ids=loaded.stop_ids,
        seed=cfg.train.seed,
    )
    print_result(result, split)
    return result
