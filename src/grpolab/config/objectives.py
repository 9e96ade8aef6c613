"""The `grpo:` keys that choose the objective and its corrections (issue 21), TRL's names in brackets.

GRPOSection (config/schema.py: the `grpo:` section) inherits these fields, so they are `grpo.*` keys. The math
lives in algo/ (objectives, importance, entropy, advantages); compat/trl_args.py maps TRL's names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from grpolab.config.schema import Config

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")


class ObjectiveFields(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"] = Field(
        "dapo", description="surrogate and normaliser (README: objectives table) [loss_type]"
    )
    ratio_level: Literal["token", "sequence"] = Field(
        "token", description="ratio per token, or one per sequence (GSPO) [importance_sampling_level]"
    )
    sapo_temperature_pos: float = Field(1.0, gt=0.0, description="sapo: gate temperature where adv > 0")
    sapo_temperature_neg: float = Field(1.05, gt=0.0, description="sapo: gate temperature where adv <= 0")
    vespo_k_pos: float = Field(2.0, ge=0.0, description="vespo: power k of the Gamma weight, adv >= 0")
    vespo_lambda_pos: float = Field(3.0, gt=0.0, description="vespo: decay lambda of the Gamma weight, adv >= 0")
    vespo_k_neg: float = Field(3.0, ge=0.0, description="vespo: power k, adv < 0")
    vespo_lambda_neg: float = Field(2.0, gt=0.0, description="vespo: decay lambda, adv < 0")
    importance_sampling_correction: bool = Field(
        True, description="vllm backends: weight tokens by the sampler IS ratio [vllm_importance_sampling_correction]"
    )
    importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = Field(
        "token_truncate", description="sampler IS: ratio per token/sequence, truncated/masked (TRL: sequence_mask)"
    )
    importance_sampling_cap: float | None = Field(
        2.0, gt=0.0, description="upper bound of the sampler IS ratio; None = none [vllm_importance_sampling_clip_max]"
    )
    importance_sampling_min: float | None = Field(
        None, ge=0.0, description="lower bound of the sampler IS ratio [vllm_importance_sampling_clip_min]"
    )
    off_policy_mask_threshold: float | None = Field(
        None, ge=0.0, description="drop sequences with adv < 0 and mean KL(sampler||policy) above this (DeepSeek-V3.2)"
    )
    entropy_top_quantile: float = Field(
        1.0, ge=0.0, le=1.0, description="train only the top share of tokens by entropy; 1 = all [top_entropy_quantile]"
    )
    entropy_coef: float = Field(0.0, ge=0.0, description="entropy bonus: loss -= coef x mean token entropy")
    entropy_adaptive: bool = Field(
        False, description="adapt entropy_coef toward entropy_target each step (Skywork-OR1) [use_adaptive_entropy]"
    )
    entropy_coef_min: float = Field(0.0, ge=0.0, description="adaptive entropy: lowest coefficient")
    entropy_coef_max: float = Field(1.0, ge=0.0, description="adaptive entropy: highest coefficient")
    entropy_coef_delta: float = Field(0.005, gt=0.0, description="adaptive entropy: change per step")
    entropy_target: float = Field(0.2, ge=0.0, description="adaptive entropy: bonus on while entropy <= this (nats)")
    reward_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = Field(
        "sum_then_normalize", description="normalize_then_sum: each reward per group, then the sum (GDPO) "
        "[multi_objective_aggregation]"
    )  # fmt: skip

    @model_validator(mode="after")
    def _check_objective(self) -> ObjectiveFields:
        if self.loss_type == "luspo" and self.ratio_level != "sequence":
            raise ValueError("grpo.ratio_level: luspo scales a sequence ratio's loss; set grpo.ratio_level=sequence")
        if self.loss_type == "vespo" and self.ratio_level != "token":
            raise ValueError("grpo.ratio_level: vespo builds its own sequence weight; keep grpo.ratio_level=token")
        low, high = self.importance_sampling_min, self.importance_sampling_cap
        if low is not None and high is not None and low >= high:
            raise ValueError(f"grpo.importance_sampling_min ({low}) must be < grpo.importance_sampling_cap ({high})")
        if self.importance_sampling_mode.endswith("truncate") and low is None and high is None:
            raise ValueError("grpo.importance_sampling_cap: a *_truncate mode needs a cap or importance_sampling_min")
        if self.entropy_coef_min > self.entropy_coef_max:
            raise ValueError("grpo.entropy_coef_min must be <= grpo.entropy_coef_max")
        if self.entropy_adaptive and not self.entropy_coef_min <= self.entropy_coef <= self.entropy_coef_max:
            raise ValueError("grpo.entropy_coef: the adaptive start must lie in [entropy_coef_min, entropy_coef_max]")
        return self


def check_objective_combinations(cfg: Config) -> None:
    """Rules that read other sections (the schema calls this from its cross-field validator)."""
    grpo = cfg.grpo
    if grpo.loss_type == "cispo" and (grpo.epsilon_high is None or grpo.epsilon_high < 1.0):
        raise ValueError(
            "grpo.epsilon_high: cispo caps the ratio at epsilon_high itself (as TRL; ScaleRL uses 5.0); set it >= 1"
        )
    sampler_is = grpo.importance_sampling_correction and cfg.generation.backend != "hf"
    if grpo.loss_type == "vespo" and sampler_is and grpo.importance_sampling_mode.startswith("sequence"):
        raise ValueError("grpo.importance_sampling_mode: vespo takes token-level sampler weights (token_*)")
    decoupled = grpo.reward_aggregation == "normalize_then_sum"
    if decoupled and "scale_rewards" in grpo.model_fields_set and grpo.scale_rewards != "group":
        raise ValueError(
            "grpo.scale_rewards: normalize_then_sum scales each reward by its group std and the sum by the "
            "batch std; leave scale_rewards unset"
        )
