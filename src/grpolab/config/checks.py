"""Config rules that read the whole tree (the schema calls them from its cross-field validator)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grpolab.config.schema import Config, DistributedConfig


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


def check_mesh(dist: DistributedConfig) -> None:
    """distributed.mesh_shape (Tunix's [[sizes], [axes]]): valid axes and sizes; an fsdp axis > 1 sets
    strategy=fsdp unless it was chosen explicitly as ddp."""
    if dist.mesh_shape is None:
        return
    sizes, axes = dist.mesh_shape
    if len(sizes) != len(axes) or len(set(axes)) != len(axes):
        raise ValueError(f"distributed.mesh_shape: need one size per distinct axis, got {dist.mesh_shape}")
    if any(a not in ("dp", "fsdp", "tp") for a in axes) or any(s < 1 for s in sizes):
        raise ValueError(
            f"distributed.mesh_shape: axes must be among dp, fsdp, tp with sizes >= 1, got {dist.mesh_shape}"
        )
    size = dict(zip(axes, sizes))
    if size.get("tp", 1) > 1:
        raise ValueError(
            "distributed.mesh_shape: tensor parallel (tp > 1) is not supported; put those devices on "
            "'fsdp' instead (e.g. [[2, 2], ['fsdp', 'tp']] -> [[4], ['fsdp']])"
        )
    if size.get("fsdp", 1) > 1 and dist.strategy != "fsdp":
        if "strategy" in dist.model_fields_set:  # an explicit choice that contradicts the mesh
            raise ValueError("distributed.mesh_shape has an fsdp axis > 1 but distributed.strategy is 'ddp'")
        dist.strategy = "fsdp"  # derived in one place: an fsdp axis means sharded parameters


def check_eval_size(cfg: Config) -> None:
    """`eval.size` questions are drawn from the data.val_size held-out ones."""
    if cfg.eval.size > cfg.data.val_size:
        raise ValueError(
            f"eval.size ({cfg.eval.size}) is larger than data.val_size ({cfg.data.val_size}); "
            "raise data.val_size or lower eval.size"
        )


def check_backend(cfg: Config) -> None:
    """What the generation backend must support: the weight sync asked for, one-step-off rollouts."""
    check_weight_sync(cfg)
    check_async(cfg)


def check_weight_sync(cfg: Config) -> None:
    """An adapter-only sync needs an adapter and the colocated engine (the server takes merged weights)."""
    if cfg.generation.vllm_weight_sync != "adapter":
        return
    if cfg.model.finetune != "lora":
        raise ValueError(
            "generation.vllm_weight_sync=adapter needs model.finetune=lora (full fine-tuning has no adapter)"
        )
    if cfg.generation.backend != "vllm":
        raise ValueError(
            f"generation.vllm_weight_sync=adapter works with generation.backend=vllm (colocated), "
            f"not {cfg.generation.backend}"
        )


def check_async(cfg: Config) -> None:
    """One-step-off rollouts need an engine with its own copy of the weights: HF generates with the very
    module the update is changing. Where `backend: auto` chose hf (no vLLM installed), a preset's
    max_staleness falls back to 0, on-policy: within its bound, with a warning, not an error."""
    if cfg.train.max_staleness > 0 and cfg.generation.backend == "hf":
        if cfg.generation._auto_chose_hf:
            warnings.warn(
                f"generation.backend=auto chose hf (vLLM is not installed): train.max_staleness="
                f"{cfg.train.max_staleness} becomes 0, rollouts are sampled in turn with the update",
                stacklevel=2,
            )
            cfg.train.max_staleness = 0
            return
        raise ValueError(
            "train.max_staleness > 0 needs generation.backend=vllm or vllm_server (hf generates with the "
            "weights being trained)"
        )


def check_steps(cfg: Config) -> None:
    """A step's sequences split evenly into micro-batches; train.epochs sets max_steps."""
    check_micro_batch(cfg)
    derive_steps_from_epochs(cfg)


def check_micro_batch(cfg: Config) -> None:
    """A step's sequences split evenly into micro-batches; the message lists the sizes that work."""
    seqs = cfg.train.questions_per_step * cfg.grpo.num_generations
    micro = cfg.train.micro_batch_size
    if micro and seqs % micro:
        divisors = [d for d in range(1, seqs + 1) if seqs % d == 0]
        raise ValueError(
            f"train.micro_batch_size ({micro}) must divide questions_per_step x num_generations "
            f"= {cfg.train.questions_per_step} x {cfg.grpo.num_generations} = {seqs}; "
            f"values that work: {divisors}"
        )


def derive_steps_from_epochs(cfg: Config) -> None:
    """train.epochs sets max_steps, here and nowhere else: the number of steps that covers the epochs."""
    if not cfg.train.epochs:
        return
    steps = cfg.train.epochs * max(1, cfg.data.train_size // cfg.train.questions_per_step)
    if "max_steps" in cfg.train.model_fields_set and cfg.train.max_steps != steps:
        raise ValueError(
            f"train.max_steps ({cfg.train.max_steps}) conflicts with train.epochs ({cfg.train.epochs}"
            f" = {steps} steps); set only one of them"
        )
    cfg.train.max_steps = steps
