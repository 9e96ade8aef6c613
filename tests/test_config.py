"""Config: precedence, overrides, presets, and one clear line for every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpolab.compat.load import load_config
from grpolab.config.load import ConfigError, config_to_yaml, configs_dir


def load(*overrides: str, preset: str | None = None, environ: dict[str, str] | None = None, env_file=None):
    return load_config(preset, list(overrides), env_file=env_file, environ=environ or {})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=-1"], "optim.lr: Input should be greater than 0"),
        (["grpo.betta=0.1"], "unknown config key 'grpo.betta'; did you mean 'grpo.beta'?"),
        (["trian.max_steps=3"], "unknown config key 'trian'; did you mean 'train'?"),
        (["train.micro_batch_size=5"], "must divide questions_per_step x num_generations = 8 x 8 = 64"),
        (["generation.temperature=0"], "generation.temperature: must be > 0 for sampling"),
        (["grpo.num_generations=1"], "grpo.num_generations: Input should be greater than or equal to 2"),
        (["data.task=jsonl"], "data.path: the jsonl task needs a file"),
        (["data.task=jsonl", "data.path=/no/such.jsonl"], "data.path: file not found: /no/such.jsonl"),
        (["grpo.loss_type=ppo"], "grpo.loss_type: Input should be 'grpo', 'bnpo', 'dr_grpo', 'dapo', 'cispo'"),
        (["eval.pass_k=[1,10]", "eval.num_samples=5"], "eval.num_samples (5) must be >= the largest k"),
        (["data.min_num=9", "data.max_num=3"], "data.min_num (9) must be <= data.max_num (3)"),
        (["grpo.epsilon=0.3", "grpo.epsilon_high=0.2"], "grpo.epsilon_high must be >= grpo.epsilon"),
        (["rewards=[{name: numeric, fn: 'a:b'}]"], "exactly one of 'name' (built-in) or 'fn'"),
        (["model.finetune=qlora"], "model.finetune: Input should be 'full' or 'lora'"),
        (["train.max_steps"], "must look like key.sub=value"),
        (["distributed.strategy=zero3"], "distributed.strategy: Input should be 'ddp' or 'fsdp'"),
    ],
)
def test_bad_input_gives_one_line_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load(*overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_micro_batch_error_lists_values_that_work():
    with pytest.raises(ConfigError, match=r"values that work: \[1, 2, 3, 4, 6, 8, 12, 24\]"):
        load("train.questions_per_step=3", "train.micro_batch_size=5")


def test_precedence_defaults_preset_dotenv_environment_command_line(tmp_path: Path):
    preset = tmp_path / "p.yaml"
    preset.write_text("grpo: {beta: 0.5, num_generations: 4}\noptim: {lr: 0.1}\ntrain: {seed: 1, max_steps: 9}\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text("BETA=0.25\nLEARNING_RATE=0.2\nSEED=2\n")
    cfg = load_config(str(preset), ["optim.lr=0.3"], env_file=dotenv, environ={"LEARNING_RATE": "0.4", "SEED": "3"})
    assert cfg.grpo.num_generations == 4  # preset over default
    assert cfg.train.max_steps == 9  # preset
    assert cfg.grpo.beta == 0.25  # .env over preset
    assert cfg.train.seed == 3  # environment over .env
    assert cfg.optim.lr == 0.3  # command line over everything
    assert cfg.generation.top_p == 1.0  # untouched default


def test_user_environment_variable_names():
    environ = {
        "MODEL_NAME": "tiny",
        "TRAIN_DATASET_SIZE": "300",
        "EVAL_DATASET_SIZE": "40",
        "PER_DEVICE_TRAIN_BATCH_SIZE": "8",
        "NUM_GENERATIONS": "6",
        "MAX_STEPS": "200",
        "LEARNING_RATE": "1e-5",
        "BETA": "0.01",
        "MAX_TOKENS": "128",
        "MAX_TURNS": "4",
        "PATIENCE": "5",
        "OUTPUT_DIR": "outputs/grpo_masked",
        "SEED": "42",
        "VERBOSE": "false",
    }
    cfg = load(environ=environ)
    assert (cfg.data.train_size, cfg.eval.size, cfg.train.questions_per_step) == (300, 40, 8)
    assert (cfg.grpo.num_generations, cfg.train.max_steps, cfg.optim.lr, cfg.grpo.beta) == (6, 200, 1e-5, 0.01)
    assert (cfg.generation.max_new_tokens, cfg.agent.max_turns, cfg.train.patience) == (128, 4, 5)
    assert cfg.train.output_dir == "outputs/grpo_masked" and cfg.logging.verbose is False
    assert cfg.sequences_per_step == 48  # 8 questions x 6 rollouts, as in the agent setup


def test_every_preset_validates():
    presets = sorted(configs_dir().glob("*.yaml"))
    assert {p.stem for p in presets} >= {
        "default",
        "small_numbers",
        "mixed",
        "arithmetic",
        "gsm8k_lora",
        "quick_test",
        "openr1_rewards",
    }
    for preset in presets:
        load_config(str(preset), [], env_file=None, environ={})


def test_canonical_and_tunix_presets_carry_their_settings():
    arithmetic = load(preset="arithmetic")
    assert (arithmetic.grpo.num_generations, arithmetic.grpo.beta, arithmetic.optim.lr) == (16, 0.1, 5e-6)
    assert arithmetic.generation.temperature == 0.7
    tunix = load(preset="gsm8k_lora")
    assert (tunix.model.finetune, tunix.model.lora_rank, tunix.grpo.num_generations) == ("lora", 32, 4)
    assert (tunix.grpo.beta, tunix.grpo.epsilon, tunix.optim.lr, tunix.optim.warmup_ratio) == (0.08, 0.2, 3e-6, 0.1)
    assert (tunix.optim.max_grad_norm, tunix.generation.temperature, tunix.generation.top_k) == (0.1, 0.9, 50)
    assert tunix.generation.max_new_tokens == 512
    assert [r.name for r in tunix.rewards.functions] == [
        "match_format_exactly",
        "match_format_approximately",
        "check_answer",
        "check_numbers",
    ]


def test_experiment_addition_model_group_and_shortcuts():
    cfg = load("+experiment=quick_test", "model=gemma3_270m", "wandb_disabled=false", "mode=full", preset="gsm8k_lora")
    assert cfg.train.max_steps == 4  # quick_test merged over the preset
    assert cfg.model.name == "google/gemma-3-270m-it" and cfg.model.lora_rank == 32
    assert cfg.logging.wandb is True and cfg.agent.mode == "full"
    assert load("model=some-org/some-model").model.name == "some-org/some-model"


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'gsm8k_lora'"):
        load(preset="gsm8k_lore")


def test_resolved_config_redacts_secrets():
    cfg = load("agent.env_params={api_key: sk-secret, depth: 2}")
    text = config_to_yaml(cfg)
    assert "sk-secret" not in text and "***" in text and "depth: 2" in text
