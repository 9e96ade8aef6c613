"""Config rules that read the whole tree (the schema calls them from its cross-field validator)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grpolab.config.schema import Config


def check_early_stopping_metric(cfg: Config) -> None:
    """`train.early_stopping_metric` must be a metric validation produces (eval/accuracy, eval/pass@k for
    a configured k, eval/format, eval/mean_reward, eval/completion_length, eval/<category>/accuracy,
    eval/rewards/<label>/mean): a typo would otherwise surface as a KeyError after the baseline."""
    metric = cfg.train.early_stopping_metric
    names = {"eval/accuracy", "eval/mean_reward", "eval/completion_length"}
    names |= {f"eval/pass@{k}" for k in cfg.eval.pass_k}
    if cfg.eval.format_reward:
        names.add("eval/format")
    labels = {spec.label for spec in cfg.rewards.functions} | {cfg.eval.correctness_reward}
    labels |= {cfg.eval.format_reward} if cfg.eval.format_reward else set()
    names |= {f"eval/rewards/{label}/mean" for label in labels}
    parts = metric.split("/")
    is_category = len(parts) == 3 and parts[0] == "eval" and parts[2] == "accuracy" and parts[1] != "rewards"
    if metric not in names and not is_category:
        import difflib

        hint = difflib.get_close_matches(metric, sorted(names), n=1)
        raise ValueError(
            f"train.early_stopping_metric '{metric}' is not an eval metric"
            + (f"; did you mean '{hint[0]}'?" if hint else f"; choose from {', '.join(sorted(names))}")
        )


def check_eval_size(cfg: Config) -> None:
    """`eval.size` questions are drawn from the data.val_size held-out ones."""
    if cfg.eval.size > cfg.data.val_size:
        raise ValueError(
            f"eval.size ({cfg.eval.size}) is larger than data.val_size ({cfg.data.val_size}); "
            "raise data.val_size or lower eval.size"
        )
