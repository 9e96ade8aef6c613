"""The `grpo:` keys of the objectives (config/objectives.py): ranges and combinations that make no
sense are refused with one line naming the field."""

from __future__ import annotations

import pytest

from grpolab.compat.load import load_config
from grpolab.config.load import ConfigError


def load(*overrides: str):
    return load_config(None, list(overrides), env_file=None, environ={})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grpo.loss_type=luspo"], "grpo.ratio_level: luspo scales a sequence ratio's loss"),
        (["grpo.loss_type=vespo", "grpo.ratio_level=sequence"], "grpo.ratio_level: vespo builds its own"),
        (["grpo.loss_type=cispo"], "grpo.epsilon_high: cispo caps the ratio at epsilon_high itself"),
        (["grpo.loss_type=cispo", "grpo.epsilon_high=0.5"], "grpo.epsilon_high: cispo caps"),
        (["grpo.ratio_level=tokens"], "grpo.ratio_level: Input should be 'token' or 'sequence'"),
        (["grpo.importance_sampling_min=3", "grpo.importance_sampling_cap=2"], "grpo.importance_sampling_min (3.0)"),
        (["grpo.importance_sampling_cap=null"], "grpo.importance_sampling_cap: a *_truncate mode needs a cap"),
        (["grpo.importance_sampling_mode=sequence"], "grpo.importance_sampling_mode: Input should be"),
        (["grpo.entropy_top_quantile=1.5"], "grpo.entropy_top_quantile: Input should be less than or equal to 1"),
        (["grpo.entropy_coef=-0.1"], "grpo.entropy_coef: Input should be greater than or equal to 0"),
        (["grpo.entropy_coef_min=0.5", "grpo.entropy_coef_max=0.1"], "grpo.entropy_coef_min must be <="),
        (["grpo.entropy_adaptive=true", "grpo.entropy_coef=2"], "grpo.entropy_coef: the adaptive start"),
        (["grpo.off_policy_mask_threshold=-1"], "grpo.off_policy_mask_threshold: Input should be greater"),
        (["grpo.sapo_temperature_neg=0"], "grpo.sapo_temperature_neg: Input should be greater than 0"),
        (["grpo.reward_aggregation=normalize_then_sum", "grpo.scale_rewards=batch"], "grpo.scale_rewards:"),
        (
            ["grpo.loss_type=vespo", "generation.backend=vllm_server", "grpo.importance_sampling_mode=sequence_mask"],
            "grpo.importance_sampling_mode: vespo takes token-level sampler weights",
        ),
    ],
)
def test_bad_objective_settings_give_one_line_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load(*overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_sensible_combinations_load():
    cfg = load("grpo.loss_type=luspo", "grpo.ratio_level=sequence", "grpo.entropy_top_quantile=0.2")
    assert cfg.grpo.loss_type == "luspo" and cfg.grpo.entropy_top_quantile == 0.2
    # sequence modes with vespo are fine where no sampler IS applies (the hf backend)
    assert load("grpo.loss_type=vespo", "grpo.importance_sampling_mode=sequence_mask").grpo.loss_type == "vespo"
    # mask modes need no bound; the existing keys keep their meaning (presets use them)
    cfg = load("grpo.importance_sampling_mode=token_mask", "grpo.importance_sampling_cap=null")
    assert cfg.grpo.importance_sampling_cap is None
    assert load().grpo.importance_sampling_cap == 2.0 and load().grpo.importance_sampling_mode == "token_truncate"
