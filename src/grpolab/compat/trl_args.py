"""TRL 1.16 `GRPOConfig` keyword names, and where each lands in grpolab's config tree.

One row per TRL argument. `target` is grpolab's dotted key (same meaning and unit unless `convert`
says otherwise); an argument TRL has and grpolab does not carries `target=None` and a one-line `note`
saying so. The README's TRL table is generated from this table (scripts/config_reference.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrlArg:
    target: str | None  # grpolab dotted key; None = not offered by grpolab (see note)
    note: str = ""  # one line for the README table / the "not offered" message
    convert: Callable[[Any], Any] | None = None  # TRL value -> grpolab value, where units differ


# TRL name -> TrlArg. Filled by the TRL-compatibility work (issue 20) and the objectives (issue 21).
TRL_ARGS: dict[str, TrlArg] = {
    # objectives and corrections (issue 21)
    "loss_type": TrlArg("grpo.loss_type"),
    "importance_sampling_level": TrlArg("grpo.ratio_level"),
    "sapo_temperature_pos": TrlArg("grpo.sapo_temperature_pos"),
    "sapo_temperature_neg": TrlArg("grpo.sapo_temperature_neg"),
    "vespo_k_pos": TrlArg("grpo.vespo_k_pos"),
    "vespo_lambda_pos": TrlArg("grpo.vespo_lambda_pos"),
    "vespo_k_neg": TrlArg("grpo.vespo_k_neg"),
    "vespo_lambda_neg": TrlArg("grpo.vespo_lambda_neg"),
    "mask_truncated_completions": TrlArg("grpo.mask_truncated_completions"),
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
    "vllm_importance_sampling_cap": TrlArg("grpo.importance_sampling_cap", note="deprecated in TRL: clip_max"),
    "off_policy_mask_threshold": TrlArg("grpo.off_policy_mask_threshold"),
    "multi_objective_aggregation": TrlArg("grpo.reward_aggregation"),
}
