"""Every TRL 1.16 objective/correction name of issue 21 trains 2 steps on the tiny model.

Each case is written twice: in grpolab's nested form (GRPOConfig(grpo={...})) and with TRL's flat
keywords as a TRL script writes them (GRPOConfig(loss_type="cispo", ...)), which GRPOConfig translates
through compat/trl_args.py's TRL_ARGS. The sampler IS names (vllm_importance_sampling_*)
only act on the vLLM backends: here they are validated and carried; the update-level tests
(test_update.py, test_distributed.py) run every mode with sampler log-probs.
"""

from __future__ import annotations

from typing import Any

import pytest

from grpolab.api import GRPOConfig, GRPOTrainer
from grpolab.compat.trl_args import TRL_ARGS
from run_helpers import QUICK, read_metrics

pytestmark = pytest.mark.slow

# TRL's flat names, grouped so that the 4 runs cover every name of issue 21 at least once
TRL_CASES: dict[str, dict[str, Any]] = {
    "cispo": {
        "loss_type": "cispo", "mask_truncated_completions": True, "top_entropy_quantile": 0.2,
        "multi_objective_aggregation": "normalize_then_sum",
    },
    "sapo_gspo": {
        "loss_type": "sapo", "sapo_temperature_pos": 1.0, "sapo_temperature_neg": 1.05,
        "importance_sampling_level": "sequence", "entropy_coef": 0.01,
    },
    "luspo": {
        "loss_type": "luspo", "importance_sampling_level": "sequence", "off_policy_mask_threshold": 0.5,
        "entropy_coef": 0.01, "use_adaptive_entropy": True, "entropy_coef_min": 0.0, "entropy_coef_max": 0.5,
        "entropy_coef_delta": 0.005, "entropy_target": 100.0,
    },
    "vespo": {
        "loss_type": "vespo", "vespo_k_pos": 2.0, "vespo_lambda_pos": 3.0, "vespo_k_neg": 3.0,
        "vespo_lambda_neg": 2.0, "vllm_importance_sampling_correction": True,
        "vllm_importance_sampling_mode": "token_mask", "vllm_importance_sampling_clip_min": 0.5,
        "vllm_importance_sampling_clip_max": 3.0,
    },
}  # fmt: skip
# grpolab asks for cispo's cap explicitly (TRL would use epsilon 0.2)
EXTRA = {"cispo": {"epsilon_high": 5.0}}
ISSUE_21_NAMES = {
    "loss_type", "importance_sampling_level", "mask_truncated_completions", "top_entropy_quantile",
    "entropy_coef", "use_adaptive_entropy", "vllm_importance_sampling_mode", "vllm_importance_sampling_clip_min",
    "vllm_importance_sampling_clip_max", "off_policy_mask_threshold", "multi_objective_aggregation",
}  # fmt: skip


def trl_nested(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """TRL's flat keywords -> grpolab's sections, through TRL_ARGS (every name must have a row)."""
    sections: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        row = TRL_ARGS[name]
        assert row.target is not None, name
        section, key = row.target.split(".", 1)
        sections.setdefault(section, {})[key] = row.convert(value) if row.convert else value
    return sections


def quick_sections(tmp_path) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {}
    for item in [*QUICK, "train.max_steps=2", "eval.every_steps=0", f"train.output_dir={tmp_path}"]:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    return sections


def test_every_trl_name_of_issue_21_has_a_row_and_a_case():
    covered = {name for case in TRL_CASES.values() for name in case}
    assert ISSUE_21_NAMES <= covered <= set(TRL_ARGS)
    for name in covered:
        target = TRL_ARGS[name].target
        assert target is not None and target.split(".")[1] in GRPOConfig.model_fields["grpo"].annotation.model_fields


def _train(tmp_path, grpo: dict[str, Any], trained: bool = True, flat: dict[str, Any] | None = None):
    sections = quick_sections(tmp_path)
    sections["grpo"] = {**sections.get("grpo", {}), **grpo}
    if grpo.get("mask_truncated_completions") or (flat or {}).get("mask_truncated_completions"):
        sections["generation"]["max_new_tokens"] = "32" if trained else "12"  # the tiny model ends in ~20 tokens
    summary = GRPOTrainer(args=GRPOConfig(**sections, **(flat or {}))).train()
    assert summary.status == "finished" and summary.steps == 2
    rows = [r for r in read_metrics(summary.run_dir) if "loss" in r or "train/skipped_empty" in r]
    assert len(rows) == 2
    assert all(abs(r["loss"]) < float("inf") for r in rows) if trained else all(r["train/skipped_empty"] for r in rows)
    return rows


@pytest.mark.parametrize("case", sorted(TRL_CASES))
def test_a_config_with_trls_names_trains_two_steps(tmp_path, case):
    assert set(trl_nested(TRL_CASES[case])) == {"grpo"}  # every name has a row in grpolab's grpo section
    rows = _train(tmp_path, {}, flat={**TRL_CASES[case], **EXTRA.get(case, {})})
    if "entropy_coef" in TRL_CASES[case]:
        assert all("entropy_coef" in r for r in rows)
    if TRL_CASES[case].get("use_adaptive_entropy"):  # entropy <= target 100: the coefficient rises each step
        assert [r["entropy_coef"] for r in rows] == pytest.approx([0.0, 0.015])


def test_the_nested_grpolab_form_trains_the_same_options(tmp_path):
    grpo = {
        "loss_type": "luspo", "ratio_level": "sequence", "off_policy_mask_threshold": 0.5,
        "entropy_top_quantile": 0.5, "entropy_coef": 0.01, "reward_aggregation": "normalize_then_sum",
        "mask_truncated_completions": True, "importance_sampling_mode": "sequence_mask",
        "importance_sampling_min": 0.5, "importance_sampling_cap": 3.0,
    }  # fmt: skip
    rows = _train(tmp_path, grpo)
    assert all(r["entropy_coef"] == 0.01 for r in rows)


def test_an_all_truncated_batch_with_mask_truncated_completions_skips_the_update(tmp_path):
    # 12 tokens: every completion of the tiny model is cut, so every token is masked: the step counts,
    # nothing is trained, nothing is NaN (the same with the entropy quantile, whose threshold is then inf)
    rows = _train(tmp_path, {"mask_truncated_completions": True, "entropy_top_quantile": 0.2}, trained=False)
    assert all(r["completions/clipped_ratio"] == 1.0 for r in rows)
