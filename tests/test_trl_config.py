"""TRL's GRPOConfig(...) as a TRL script writes it: flat names onto grpolab's tree (compat/), with the
batch arithmetic worked out by hand, one-line errors for what grpolab lacks, and hints that never
point at an unrelated section."""

from __future__ import annotations

import pytest

import grpolab
from grpolab.api import GRPOConfig
from grpolab.compat.trl_args import KEEP, TRL_ARGS
from grpolab.compat.trl_translate import JOINT
from grpolab.config.load import ConfigError, check_keys
from grpolab.config.schema import Config

# The 15 names of the issue, as a TRL script passes them.
TRL_SCRIPT = dict(
    learning_rate=1e-6,
    num_generations=4,
    max_completion_length=64,
    per_device_train_batch_size=8,
    beta=0.0,
    epsilon=0.3,
    loss_type="dr_grpo",
    logging_steps=5,
    output_dir="runs",
    max_steps=7,
    temperature=0.9,
    num_iterations=2,
    scale_rewards=False,
    report_to="none",
    use_vllm=False,
)


def test_trl_grpo_config_with_its_15_common_names_unchanged(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = GRPOConfig(**TRL_SCRIPT)
    assert cfg.optim.lr == 1e-6 and cfg.grpo.num_generations == 4 and cfg.generation.max_new_tokens == 64
    # 8 completions per device x 1 process x 1 accumulation step / 4 per question = 2 questions per step,
    # each forward/backward on 8 completions as in TRL
    assert cfg.train.questions_per_step == 2 and cfg.train.micro_batch_size == 8
    assert (cfg.grpo.beta, cfg.grpo.epsilon, cfg.grpo.loss_type, cfg.grpo.num_iterations) == (0.0, 0.3, "dr_grpo", 2)
    assert cfg.logging.log_every == 5 and cfg.train.output_dir == "runs" and cfg.train.max_steps == 7
    assert cfg.generation.temperature == 0.9 and cfg.grpo.scale_rewards == "none"  # TRL's False
    assert not cfg.logging.tensorboard and not cfg.logging.wandb and cfg.generation.backend == "hf"


def test_batch_counts_accumulation_and_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    # 4 per device x 2 processes x 3 accumulation steps = 24 completions / 6 = 4 questions per step
    cfg = GRPOConfig(per_device_train_batch_size=4, gradient_accumulation_steps=3, num_generations=6)
    assert cfg.train.questions_per_step == 4 and cfg.train.micro_batch_size == 4
    # generation_batch_size equal to one step's completions is TRL's default, so it is accepted
    cfg = GRPOConfig(per_device_train_batch_size=4, generation_batch_size=8, num_generations=4)
    assert cfg.train.questions_per_step == 2
    with pytest.raises(ConfigError, match=r"= 8 completions per step, not divisible by num_generations \(3\)"):
        GRPOConfig(per_device_train_batch_size=4, num_generations=3)
    with pytest.raises(ConfigError, match=r"steps_per_generation \(4\) must equal gradient_accumulation_steps \(1\)"):
        GRPOConfig(per_device_train_batch_size=4, steps_per_generation=4)


def test_flat_and_nested_mix_and_a_conflict_names_both():
    cfg = GRPOConfig(learning_rate=2e-6, grpo={"beta": 0.1}, train={"max_steps": 3})
    assert (cfg.optim.lr, cfg.grpo.beta, cfg.train.max_steps) == (2e-6, 0.1, 3)
    assert GRPOConfig(beta=0.1, grpo={"beta": 0.1}).grpo.beta == 0.1  # the same value twice is fine
    conflict = r"^GRPOConfig: beta=0\.2 \(TRL's name for grpo\.beta\) conflicts with grpo\.beta=0\.1"
    with pytest.raises(ConfigError, match=conflict):
        GRPOConfig(beta=0.2, grpo={"beta": 0.1})
    with pytest.raises(ConfigError, match=r"fp16 and bf16 disagree on model\.dtype"):
        GRPOConfig(bf16=True, fp16=True)


def test_trl_semantics_of_steps_epochs_warmup_and_spellings():
    assert GRPOConfig(num_train_epochs=2, max_steps=5).train.max_steps == 5  # max_steps > 0 wins, as in TRL
    assert GRPOConfig(num_train_epochs=2, max_steps=-1).train.epochs == 2
    # warmup_steps=3 of 7 steps: grpolab warms up ceil(ratio x 7) steps, which must be exactly 3
    ratio = GRPOConfig(warmup_steps=3, max_steps=7).optim.warmup_ratio
    assert abs(ratio - 3 / 7) < 1e-12 and -(-ratio * 7 // 1) == 3
    assert GRPOConfig(warmup_steps=0.1).optim.warmup_ratio == 0.1  # transformers 5: below 1 is a ratio
    assert GRPOConfig(scale_rewards=True).grpo.scale_rewards == "group"
    assert GRPOConfig(report_to=["wandb", "tensorboard"]).logging.wandb
    assert GRPOConfig(use_vllm=True, vllm_mode="server").generation.backend == "vllm_server"
    assert GRPOConfig(vllm_server_host="10.0.0.2", vllm_server_port=8001).generation.vllm_server_url == (
        "http://10.0.0.2:8001"
    )
    assert GRPOConfig(disable_dropout=False).model.dropout is True
    import torch

    model = GRPOConfig(model_init_kwargs={"torch_dtype": torch.bfloat16, "attn_implementation": "sdpa"}).model
    assert (model.dtype, model.attn_implementation) == ("bfloat16", "sdpa")
    with pytest.raises(ConfigError, match=r"model_init_kwargs\['device_map'\] is not offered by grpolab"):
        GRPOConfig(model_init_kwargs={"device_map": "auto"})
    with pytest.raises(ConfigError, match=r"logging_steps=0\.1: grpolab counts whole steps"):
        GRPOConfig(logging_steps=0.1)


def test_what_grpolab_lacks_is_one_line_but_its_default_is_accepted():
    cfg = GRPOConfig(sync_ref_model=False, remove_unused_columns=False, dataloader_num_workers=0)
    assert cfg.model_dump() == GRPOConfig().model_dump()
    with pytest.raises(ConfigError, match=r"^GRPOConfig: TRL's sync_ref_model=True is not offered by grpolab \("):
        GRPOConfig(sync_ref_model=True)
    with pytest.raises(ConfigError, match=r"^GRPOConfig: dataloader_num_workers=4 is a transformers TrainingArguments"):
        GRPOConfig(dataloader_num_workers=4)
    with pytest.raises(ConfigError, match=r"report_to='mlflow': grpolab reports to tensorboard and wandb only"):
        GRPOConfig(report_to="mlflow")


def test_load_takes_trl_names_over_the_preset_and_keeps_reward_weights():
    cfg = GRPOConfig.load("quick_test", "train.max_steps=3", learning_rate=3e-6, reward_weights=[1, 0.5])
    assert (cfg.optim.lr, cfg.train.max_steps, cfg.grpo.num_generations) == (3e-6, 3, 4)  # 4: the preset's
    assert cfg._reward_weights == [1.0, 0.5]
    # per_device_train_batch_size=8 / the preset's 4 generations = 2 questions
    assert GRPOConfig.load("quick_test", per_device_train_batch_size=8).train.questions_per_step == 2
    with pytest.raises(ConfigError, match=r"max_steps=5 \(TRL's name for train\.max_steps\) conflicts"):
        GRPOConfig.load("quick_test", "train.max_steps=3", max_steps=5)


@pytest.mark.parametrize(
    ("key", "hint"),
    [("bta", "beta"), ("lr", "optim.lr"), ("max_new_tokens", "generation.max_new_tokens"), ("trian", "train")],
)
def test_unknown_keyword_hints_point_at_the_right_place(key, hint):
    with pytest.raises(ConfigError, match=rf"^unknown config key '{key}'; did you mean '{hint}'\?$"):
        GRPOConfig(**{key: 1})


@pytest.mark.parametrize(("key", "hint"), [("beta", "grpo.beta"), ("output_dir", "train.output_dir")])
def test_a_trl_name_in_a_yaml_tree_never_suggests_an_unrelated_section(key, hint):
    # before: 'beta' -> 'eval' and 'output_dir' -> 'optim' (closest section name by spelling)
    with pytest.raises(ConfigError, match=rf"did you mean '{hint}'\?"):
        check_keys({key: 1})


def test_every_row_lands_on_a_real_key():
    """Adding a row is all a one-to-one TRL argument needs: its target must be a config key."""
    for name, row in TRL_ARGS.items():
        if row.target is None:
            assert row.note, name
        elif name not in JOINT:
            section, _, leaf = row.target.partition(".")
            assert leaf in Config.model_fields[section].annotation.model_fields, (name, row.target)
    assert repr(KEEP) == "KEEP"


def test_dir_lists_the_lazy_exports():
    names = dir(grpolab)
    assert {"GRPOTrainer", "GRPOConfig", "RunSummary", "run_training", "__version__"} <= set(names)
