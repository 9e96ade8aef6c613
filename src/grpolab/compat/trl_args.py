"""TRL 1.16 `GRPOConfig` keyword names, and where each lands in grpolab's config tree.

One row per TRL argument. `target` is grpolab's dotted key (same meaning and unit unless `convert`
says otherwise); an argument TRL has and grpolab does not carries `target=None` and a one-line `note`
saying so. The README's TRL table is generated from this table (scripts/config_reference.py).
Translation (and the arguments that set several keys together: the batch sizes, use_vllm +
vllm_mode, report_to, model_init_kwargs, reward_weights) lives in `compat/trl_translate.py`;
adding a row here is all a new one-to-one argument needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


# What `convert` returns when the TRL value asks for what grpolab does anyway: nothing is set.
KEEP: Any = _Keep()


@dataclass(frozen=True)
class TrlArg:
    target: str | None  # grpolab dotted key; None = not offered by grpolab (see note)
    note: str = ""  # one line for the README table / the "not offered" message
    convert: Callable[[Any], Any] | None = None  # TRL value -> grpolab value, where units differ
    # target=None: values accepted without a word (TRL's default, or what grpolab does anyway);
    # any other value is a ConfigError quoting `note`.
    accepts: tuple[Any, ...] = ()


def _turns_from_iterations(iterations: Any) -> int:
    """TRL runs the tools, then generates again, up to N times: N + 1 model turns in all."""
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise ValueError(f"max_tool_calling_iterations: expected a whole number >= 0, got {iterations!r}")
    return iterations + 1


def _positive_or_keep(value: Any) -> Any:
    return KEEP if value is None or value == -1 else value  # TRL: max_steps=-1 = "use the epochs"


def _whole(name: str) -> Callable[[Any], Any]:
    """A count TRL also takes as a fraction of the run (logging_steps=0.1); grpolab counts steps."""

    def convert(value: Any) -> Any:
        if value is None:
            return KEEP
        if float(value) != int(value) or value < 0:
            raise ValueError(f"{name}={value!r}: grpolab counts whole steps; give an integer")
        return int(value)

    return convert


def _epochs(value: Any) -> Any:
    if float(value) != int(value):
        raise ValueError(f"num_train_epochs={value!r}: grpolab trains whole epochs; give an integer or max_steps")
    return int(value)


def _dtype(when_true: str, when_false: Any) -> Callable[[Any], Any]:
    return lambda value: when_true if value else when_false


def _eval_strategy(value: Any) -> Any:
    if value == "epoch":
        raise ValueError("eval_strategy='epoch': grpolab validates every eval_steps steps; give eval_steps instead")
    return 0 if value == "no" else KEEP


def _save_strategy(value: Any) -> Any:
    if value == "epoch":
        raise ValueError("save_strategy='epoch': grpolab checkpoints every save_steps steps; give save_steps instead")
    return 0 if value == "no" else KEEP


def _scale_rewards(value: Any) -> Any:
    return {True: "group", False: "none"}.get(value, value)  # TRL's bool spelling


def _none_keeps(value: Any) -> Any:
    return KEEP if value is None else value


BATCH = (
    "x gradient_accumulation_steps x processes / num_generations questions per step (the division must be "
    "exact); also train.micro_batch_size = it (completions per forward/backward)"
)
NO_DEEPSPEED = "grpolab shards with FSDP2 (distributed.strategy=fsdp), not DeepSpeed"

# TRL name -> TrlArg. Filled by the TRL-compatibility work (issue 20) and the objectives (issue 21).
TRL_ARGS: dict[str, TrlArg] = {
    # -- model ------------------------------------------------------------------------------------
    "model_init_kwargs": TrlArg(
        "model.dtype, model.attn_implementation, model.revision, model.trust_remote_code",
        "its keys dtype (torch_dtype), attn_implementation, revision, trust_remote_code; else pass a loaded model",
    ),
    "trust_remote_code": TrlArg("model.trust_remote_code"),
    "disable_dropout": TrlArg(
        "model.dropout", "inverted (disable_dropout=True = model.dropout=false, grpolab's default)", lambda v: not v
    ),
    "gradient_checkpointing": TrlArg("model.gradient_checkpointing", "TRL's default is True, grpolab's False"),
    "bf16": TrlArg(
        "model.dtype", "True = bfloat16 weights, False = float32 (no mixed precision)", _dtype("bfloat16", "float32")
    ),
    "fp16": TrlArg("model.dtype", "True = float16 weights", _dtype("float16", KEEP)),
    "cast_lm_head_to_fp32": TrlArg(None, "not offered", accepts=(False,)),
    "router_aux_loss_coef": TrlArg(None, "not offered (MoE router loss)", accepts=(None,)),
    "use_liger_kernel": TrlArg(None, "not offered (log-probs are chunked by grpolab itself)", accepts=(False,)),
    # -- data ---------------------------------------------------------------------------------------
    "remove_unused_columns": TrlArg(None, "grpolab always passes every column to the rewards", accepts=(False, None)),
    "shuffle_dataset": TrlArg(None, "the training questions are always shuffled (train.seed)", accepts=(True, None)),
    "num_generations": TrlArg("grpo.num_generations"),
    "num_generations_eval": TrlArg(
        None, "evaluation is greedy, one completion per question (+ eval.num_samples for pass@k)", accepts=(None,)
    ),
    "max_completion_length": TrlArg("generation.max_new_tokens", "TRL's default is 512, grpolab's 32"),
    "max_prompt_length": TrlArg("generation.max_prompt_length", "TRL < 1.0 (gone in 1.16): prompts left-truncated"),
    "ds3_gather_for_generation": TrlArg(None, NO_DEEPSPEED, accepts=(True,)),
    "pad_to_multiple_of": TrlArg(None, "not offered (padding is to the longest sequence)", accepts=("auto", None)),
    # -- batch (translated together, see trl_translate.batch_keys) ---------------------------------
    "per_device_train_batch_size": TrlArg("train.questions_per_step", f"completions: it {BATCH}"),
    "gradient_accumulation_steps": TrlArg("train.questions_per_step", "multiplies per_device_train_batch_size (above)"),
    "generation_batch_size": TrlArg(
        "train.questions_per_step", "must equal one optimizer step's completions: grpolab generates once per step"
    ),
    "steps_per_generation": TrlArg(
        "train.questions_per_step", "must equal gradient_accumulation_steps: grpolab generates once per step"
    ),
    # -- generation ---------------------------------------------------------------------------------
    "temperature": TrlArg("generation.temperature"),
    "top_p": TrlArg("generation.top_p"),
    "top_k": TrlArg("generation.top_k", convert=lambda v: 0 if v is None else v),
    "repetition_penalty": TrlArg("generation.repetition_penalty"),
    "min_p": TrlArg(None, "not offered", accepts=(None, 0.0)),
    "generation_kwargs": TrlArg(None, "not offered; use generation.* keys", accepts=(None, {})),
    "chat_template_kwargs": TrlArg(None, "not offered", accepts=(None, {})),
    "cache_implementation": TrlArg(None, "not offered", accepts=(None,)),
    "use_transformers_paged": TrlArg(None, "not offered; use generation.backend=vllm", accepts=(False,)),
    "use_transformers_continuous_batching": TrlArg(None, "not offered; use generation.backend=vllm", accepts=(False,)),
    "transformers_continuous_batching_config": TrlArg(None, "not offered", accepts=(None,)),
    # -- vLLM ---------------------------------------------------------------------------------------
    "use_vllm": TrlArg("generation.backend", "True: vllm (vllm_mode='colocate', TRL's default) or vllm_server"),
    "vllm_mode": TrlArg("generation.backend", "with use_vllm=True: colocate = vllm, server = vllm_server"),
    "vllm_server_base_url": TrlArg("generation.vllm_server_url"),
    "vllm_server_host": TrlArg("generation.vllm_server_url", "http://HOST:PORT (ignored when a base URL is given)"),
    "vllm_server_port": TrlArg("generation.vllm_server_url", "http://HOST:PORT (ignored when a base URL is given)"),
    "vllm_gpu_memory_utilization": TrlArg("generation.vllm_gpu_memory_utilization"),
    "vllm_server_timeout": TrlArg(None, "not offered (grpolab waits for the server's /health)", accepts=(240.0,)),
    "vllm_group_port": TrlArg(None, "not offered (weights go to the server over HTTP)", accepts=(51216,)),
    "vllm_model_impl": TrlArg(None, "not offered", accepts=("vllm",)),
    "vllm_enable_sleep_mode": TrlArg(None, "not offered", accepts=(False,)),
    "vllm_structured_outputs_regex": TrlArg(None, "not offered", accepts=(None,)),
    "vllm_max_model_length": TrlArg(None, "set from max_prompt_length + max_completion_length", accepts=(None,)),
    "vllm_tensor_parallel_size": TrlArg(None, "not offered (one engine per training process)", accepts=(1,)),
    # -- the objective ------------------------------------------------------------------------------
    "beta": TrlArg("grpo.beta", "TRL's default is 0.0, grpolab's 0.04"),
    "num_iterations": TrlArg("grpo.num_iterations"),
    "epsilon": TrlArg("grpo.epsilon"),
    "epsilon_high": TrlArg("grpo.epsilon_high"),
    "delta": TrlArg(None, "not offered (two-sided clipping of INTELLECT-2)", accepts=(None,)),
    "loss_type": TrlArg("grpo.loss_type"),
    "scale_rewards": TrlArg("grpo.scale_rewards", "True = group, False = none", _scale_rewards),
    "mask_truncated_completions": TrlArg("grpo.mask_truncated_completions"),
    "reward_weights": TrlArg(
        "rewards.functions[].weight", "weights of GRPOTrainer's reward_funcs (same as its reward_weights=)"
    ),
    "sync_ref_model": TrlArg(None, "not offered (the reference model stays the initial policy)", accepts=(False,)),
    "ref_model_mixup_alpha": TrlArg(None, "not offered (see sync_ref_model)", accepts=(0.6,)),
    "ref_model_sync_steps": TrlArg(None, "not offered (see sync_ref_model)", accepts=(512,)),
    "use_bias_correction_kl": TrlArg(None, "not offered", accepts=(True, False)),
    # -- optimizer (transformers TrainingArguments) --------------------------------------------------
    "learning_rate": TrlArg("optim.lr", "TRL's default is 1e-6, grpolab's 1e-5"),
    "lr_scheduler_type": TrlArg("optim.scheduler", "transformers' default is linear, grpolab's constant"),
    "lr_scheduler_kwargs": TrlArg("optim.scheduler_kwargs", convert=lambda v: {} if v is None else v),
    "warmup_ratio": TrlArg("optim.warmup_ratio", "transformers < 5; in 5 a warmup_steps below 1"),
    "warmup_steps": TrlArg("optim.warmup_ratio", "below 1: a ratio; else divided by max_steps"),
    "weight_decay": TrlArg("optim.weight_decay"),
    "adam_beta1": TrlArg("optim.adam_beta1"),
    "adam_beta2": TrlArg("optim.adam_beta2", "transformers' default is 0.999, grpolab's 0.99"),
    "adam_epsilon": TrlArg(None, "AdamW's eps is torch's 1e-8", accepts=(1e-8,)),
    "optim": TrlArg(None, "always torch AdamW", accepts=("adamw_torch", "adamw_torch_fused")),
    "max_grad_norm": TrlArg("optim.max_grad_norm"),
    # -- length and cadence of the run ---------------------------------------------------------------
    "max_steps": TrlArg("train.max_steps", "-1 = use num_train_epochs; wins over it when > 0", _positive_or_keep),
    "num_train_epochs": TrlArg("train.epochs", "whole epochs; max_steps > 0 wins, as in TRL", _epochs),
    "seed": TrlArg("train.seed"),
    "data_seed": TrlArg(None, "the question order follows train.seed", accepts=(None,)),
    "output_dir": TrlArg("train.output_dir", "the run lands in output_dir/run_name/<timestamp>"),
    "run_name": TrlArg("train.run_name", "names the run directory and the W&B run"),
    "resume_from_checkpoint": TrlArg(
        "train.resume", "True = 'auto' (latest checkpoint)", lambda v: "auto" if v is True else (v or KEEP)
    ),
    "use_cpu": TrlArg("train.device", "True = cpu", lambda v: "cpu" if v else KEEP),
    "logging_steps": TrlArg("logging.log_every", "whole steps (no fraction of the run)", _whole("logging_steps")),
    "logging_strategy": TrlArg(None, "grpolab logs every logging_steps steps", accepts=("steps",)),
    "save_steps": TrlArg("train.save_every", "whole steps; the end of the run is always saved", _whole("save_steps")),
    "save_strategy": TrlArg("train.save_every", "'no' = 0 (only the end of the run)", _save_strategy),
    "save_total_limit": TrlArg("train.keep_last", "periodic checkpoints kept (besides best)", _none_keeps),
    "eval_steps": TrlArg("eval.every_steps", "validates eval_dataset", _whole("eval_steps")),
    "eval_strategy": TrlArg("eval.every_steps", "'no' = 0 (only before and after training)", _eval_strategy),
    "per_device_eval_batch_size": TrlArg("eval.batch_size", "questions per generate call (greedy: one each)"),
    "report_to": TrlArg(
        "logging.tensorboard, logging.wandb", "'none', 'tensorboard', 'wandb', 'all' (= tensorboard) or a list"
    ),
    "disable_tqdm": TrlArg("logging.quiet", "True also quiets info lines (warnings and the summary stay)"),
    "log_completions": TrlArg("logging.verbose", "completions are always written to samples.jsonl"),
    "num_completions_to_print": TrlArg("logging.samples_per_step", "completions logged per step", _none_keeps),
    "log_unique_prompts": TrlArg(None, "not offered", accepts=(False,)),
    "log_multimodal": TrlArg(None, "not offered (text only)", accepts=(True, False)),
    "log_completions_hub_repo": TrlArg(None, "not offered", accepts=(None,)),
    "push_to_hub": TrlArg(None, "after training: grpolab export RUN_DIR --push-to-hub OWNER/NAME", accepts=(False,)),
    "hub_model_id": TrlArg(None, "see push_to_hub", accepts=(None,)),
    "torch_empty_cache_steps": TrlArg(None, "not offered", accepts=(None,)),
    # tools (issue 19)
    "max_tool_calling_iterations": TrlArg(
        "agent.max_turns", "N tool rounds after the first turn = N + 1 model turns", _turns_from_iterations
    ),
    # objectives and corrections (issue 21)
    "importance_sampling_level": TrlArg("grpo.ratio_level"),
    "sapo_temperature_pos": TrlArg("grpo.sapo_temperature_pos"),
    "sapo_temperature_neg": TrlArg("grpo.sapo_temperature_neg"),
    "vespo_k_pos": TrlArg("grpo.vespo_k_pos"),
    "vespo_lambda_pos": TrlArg("grpo.vespo_lambda_pos"),
    "vespo_k_neg": TrlArg("grpo.vespo_k_neg"),
    "vespo_lambda_neg": TrlArg("grpo.vespo_lambda_neg"),
    "top_entropy_quantile": TrlArg("grpo.entropy_top_quantile"),
    "entropy_coef": TrlArg("grpo.entropy_coef"),
    "use_adaptive_entropy": TrlArg("grpo.entropy_adaptive"),
    "entropy_coef_min": TrlArg("grpo.entropy_coef_min"),
    "entropy_coef_max": TrlArg("grpo.entropy_coef_max"),
    "entropy_coef_delta": TrlArg("grpo.entropy_coef_delta"),
    "entropy_target": TrlArg("grpo.entropy_target"),
    "vllm_importance_sampling_correction": TrlArg("grpo.importance_sampling_correction"),
    "vllm_importance_sampling_mode": TrlArg(
        "grpo.importance_sampling_mode", note="grpolab's default is token_truncate (TRL's: sequence_mask)"
    ),
    "vllm_importance_sampling_clip_max": TrlArg(
        "grpo.importance_sampling_cap", note="grpolab's default is 2.0 (TRL's: 3.0)"
    ),
    "vllm_importance_sampling_clip_min": TrlArg("grpo.importance_sampling_min"),
    "vllm_importance_sampling_min": TrlArg(
        "grpo.importance_sampling_min", note="same as vllm_importance_sampling_clip_min"
    ),
    "vllm_importance_sampling_cap": TrlArg("grpo.importance_sampling_cap", note="deprecated in TRL: clip_max"),
    "off_policy_mask_threshold": TrlArg("grpo.off_policy_mask_threshold"),
    "multi_objective_aggregation": TrlArg("grpo.reward_aggregation"),
}
