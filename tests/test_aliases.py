"""The seeds' key names, flags and environment variables, and where each config value came from.
Config-level only (no model is loaded): every test here runs in well under a second."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from grpolab.cli.main import main
from grpolab.compat.load import load_config
from grpolab.compat.provenance import environment_changes, explain_config
from grpolab.compat.seeds import pop_aliases, translate_overrides
from grpolab.config.load import ConfigError, configs_dir
from grpolab.observe.files import write_status
from grpolab.observe.journal import format_entry, journaled


def load(*overrides: str, preset: str | None = None, environ: dict[str, str] | None = None):
    return load_config(preset, list(overrides), env_file=None, environ=environ or {})


@pytest.fixture(autouse=True)
def no_user_environment(monkeypatch, tmp_path):
    """main() reads os.environ and ./.env: a SEED in the shell running the tests must not leak in."""
    from grpolab.compat.env_vars import ENV_PREFIX, ENV_VARS

    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(ENV_PREFIX + name, raising=False)
    monkeypatch.chdir(tmp_path)


# --- agent-tunix (Hydra) keys -----------------------------------------------------------------------


def test_tunix_keys_mean_what_they_meant_in_tunix():
    cfg = load(
        "optimizer.learning_rate=3e-6", "optimizer.warmup_ratio=0.1", "optimizer.max_grad_norm=0.1",
        "training.micro_batch_size=2",       # Tunix: prompts per batch, each sampled G times
        "training.save_interval_steps=50", "generation.max_generation_steps=256",
        "generation.max_prompt_length=128", "grpo.num_generations=2", "model.lora_rank=8",
        "model.mesh_shape=[[2],[\"fsdp\"]]", "wandb_disabled=true",
    )  # fmt: skip
    assert (cfg.optim.lr, cfg.optim.warmup_ratio, cfg.optim.max_grad_norm) == (3e-6, 0.1, 0.1)
    assert (cfg.train.questions_per_step, cfg.train.save_every) == (2, 50)
    assert (cfg.generation.max_new_tokens, cfg.generation.max_prompt_length) == (256, 128)
    assert (cfg.grpo.num_generations, cfg.model.lora_rank, cfg.logging.wandb) == (2, 8, False)
    assert cfg.distributed.mesh_shape == ([2], ["fsdp"]) and cfg.distributed.strategy == "fsdp"
    assert cfg.sequences_per_step == 4  # 2 prompts x 2 generations


@pytest.mark.parametrize(
    ("items", "steps", "epochs"),
    [
        (["training.num_batches=10"], 10, 0),  # Tunix's num_epochs defaults to 1
        (["training.num_batches=10", "training.num_epochs=3"], 30, 0),  # the N batches, 3 times over
        (["training.num_epochs=3", "training.num_batches=10"], 30, 0),  # order does not matter
    ],
)
def test_tunix_batches_times_epochs_is_the_number_of_steps(items, steps, epochs):
    cfg = load(*items, preset="gsm8k_lora")
    assert (cfg.train.max_steps, cfg.train.epochs) == (steps, epochs)


def test_tunix_num_epochs_alone_is_passes_over_the_training_questions():
    cfg = load("training.num_epochs=2", "data.train_size=40", "train.questions_per_step=4")
    assert cfg.train.max_steps == 2 * 40 // 4


def test_tunix_model_groups_and_sizes():
    assert load("model=gemma3_270m").model.name == "google/gemma-3-270m-it"
    assert load("model.model_size=1b").model.name == "google/gemma-3-1b-it"
    with pytest.raises(ConfigError, match=r"model\.model_size: known sizes are 270m, 1b"):
        load("model.model_size=7b")


@pytest.mark.parametrize("preset", sorted(p.stem for p in configs_dir().glob("*.yaml")))
def test_quick_test_is_an_addition_to_every_preset(preset):
    cfg = load("+experiment=quick_test", preset=preset)  # arithmetic failed here on micro_batch_size 32
    assert cfg.train.max_steps == 4 and cfg.sequences_per_step == 8


def test_checkpoint_dir_resumes_the_latest_checkpoint_there(tmp_path):
    run = tmp_path / "tunix-grpo" / "2026-01-01_00-00-00"
    for step in (9, 10):  # step-10 is after step-9 by number, not by name
        (run / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (run / "checkpoints" / f"step-{step}" / "trainer_state.json").write_text("{}")
    (run / "checkpoints" / "step-11").mkdir()  # an unfinished save: no trainer state
    expected = str(run / "checkpoints" / "step-10")
    for given in (run / "checkpoints", run, tmp_path / "tunix-grpo"):
        assert load(f"checkpoint_dir={given}").train.resume == expected
    with pytest.raises(ConfigError, match=r"checkpoint_dir=.*no checkpoint"):
        load(f"checkpoint_dir={tmp_path / 'empty'}")


def test_short_keys_work_everywhere_and_ambiguous_ones_fail():
    cfg = load("seed=3", "lr=1e-4", "num_generations=4")
    assert (cfg.train.seed, cfg.optim.lr, cfg.grpo.num_generations) == (3, 1e-4, 4)
    assert cfg.data.seed == 42  # `seed` is the training seed; the split stays fixed
    with pytest.raises(ConfigError, match=r"key 'path' is ambiguous: data\.path, journal\.path"):
        load("path=x.jsonl")


def test_multirun_with_a_short_fixed_key(monkeypatch):
    """`--multirun lr=1e-6,3e-6 seed=1` failed on `seed` (only grid keys were expanded)."""
    seen: list[list[str]] = []

    def fake_run(overrides, out_dir, *, preset=None):
        seen.append(overrides)
        cfg = load_config(preset, overrides, env_file=None, environ={})
        return {"status": "finished", "best_accuracy": cfg.optim.lr, "run_dir": str(out_dir)}

    monkeypatch.setattr("grpolab.cli.sweep.default_run_one", fake_run)
    assert main(["train", "-c", "quick_test", "--multirun", "lr=1e-6,3e-6", "seed=1", "train.output_dir=out"]) == 0
    assert [o[-1] for o in seen] == ["optim.lr=1e-6", "optim.lr=3e-6"] and all("seed=1" in o for o in seen)


# --- the eval config (003) and YAML files in the seeds' own words ---------------------------------------


def test_eval_config_yaml_with_its_own_flat_keys(tmp_path):
    path = tmp_path / "eval_test_improved.yaml"
    path.write_text(
        textwrap.dedent("""\
            train_samples: 200
            test_samples: 50
            learning_rate: 5e-5
            num_epochs: 10
            beta: 0.05
            temperature: 0.9
            eval_temperature: 0.8
            """)
    )
    cfg = load(preset=str(path))
    assert (cfg.data.train_size, cfg.data.test_size, cfg.optim.lr, cfg.train.epochs) == (200, 50, 5e-5, 10)
    assert (cfg.grpo.beta, cfg.generation.temperature, cfg.eval.temperature) == (0.05, 0.9, 0.8)


def test_tunix_yaml_nested_sections_are_translated():
    tree = {"optimizer": {"learning_rate": 3e-6}, "training": {"num_batches": 5}, "grpo": {"beta": 0.08}}
    assert pop_aliases(tree) == ["optimizer.learning_rate=3e-06", "training.num_batches=5"]
    assert tree == {"grpo": {"beta": 0.08}}  # the emptied foreign sections are gone, ours kept
    assert translate_overrides(["training.num_batches=5"]) == ["train.max_steps=5", "train.epochs=0"]


def test_positional_config_path_is_the_config(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("train_samples: 30\n")
    assert main(["train", str(path), "--print-config"]) == 0
    assert "train_size: 30" in capsys.readouterr().out
    assert main(["train", "-c", "default", str(path)]) == 2
    assert "two configs given" in capsys.readouterr().err


def test_resume_takes_a_path_only_when_one_follows(capsys):
    assert main(["train", "--resume", "train.max_steps=7", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "resume: auto" in out


# --- the canonical script's flags ---------------------------------------------------------------------


def test_canonical_script_flags(capsys):
    argv = [
        "train", "-c", "arithmetic", "--dataset_type", "small_numbers", "--n_samples", "150",
        "--min_num", "1", "--max_num", "9", "--batch_size", "64", "--num_generations", "16",
        "--learning_rate", "1e-5", "--temperature", "1.0", "--epochs", "30", "--beta", "0.1",
        "--model_name", "tiny", "--seed", "7", "--exp_name", "overfit", "--tags", "small", "fast",
        "--hypothesis", "G=16: enough variance", "--print-config",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for line in [
        "task: small_numbers", "train_size: 150", "min_num: 1", "max_num: 9", "questions_per_step: 4",
        "num_generations: 16", "lr: 1.0e-05", "temperature: 1.0", "epochs: 30", "beta: 0.1", "name: tiny",
        "seed: 7", "exp_name: overfit", "tags: [small, fast]", "hypothesis: 'G=16: enough variance'",
    ]:  # fmt: skip
        assert f"  {line}" in out, line
    assert "max_steps: 1110" in out  # 30 epochs x 150 questions / 4 per step (150 // 4 = 37)


def test_batch_size_must_be_divisible_by_the_generations(capsys):
    assert main(["train", "--batch_size", "250", "--num_generations", "16", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "--batch_size (250) must be divisible by --num_generations (16)" in err and "240, 256" in err
    assert main(["train", "--batch_size", "20", "--print-config"]) == 2  # G from the preset (8)
    assert "grpo.num_generations (8)" in capsys.readouterr().err


# --- environment, provenance, --print-config, --version ------------------------------------------------


def test_prefixed_environment_names_win_over_plain_ones():
    cfg = load(environ={"SEED": "7", "GRPOLAB_SEED": "8", "GRPOLAB_OUTPUT_DIR": "elsewhere"})
    assert (cfg.train.seed, cfg.train.output_dir) == (8, "elsewhere")


def test_every_value_not_at_its_default_names_its_source(tmp_path):
    dotenv = tmp_path / "my.env"
    dotenv.write_text("PATIENCE=3\nMAX_STEPS=9\n")
    _, explained = explain_config(
        "eval_test_improved",
        ["optimizer.learning_rate=3e-6", "+experiment=quick_test", "train.max_steps=6"],
        env_file=dotenv,
        environ={"SEED": "7", "MAX_STEPS": "8"},
    )
    assert explained["optim.lr"] == "command line: optimizer.learning_rate=3e-6"
    assert explained["grpo.beta"] == "preset eval_test_improved"
    assert explained["train.questions_per_step"] == "command line: +experiment=quick_test"
    assert explained["train.seed"] == "environment SEED=7"
    assert explained["train.patience"] == ".env PATIENCE=3"
    assert explained["train.max_steps"] == "command line: train.max_steps=6"  # over env and .env
    assert "eval.temperature" not in explained  # 0.8 is the default
    assert sorted(environment_changes(explained)) == ["PATIENCE=3 (train.patience)", "SEED=7 (train.seed)"]


def test_derived_values_are_called_derived():
    _, explained = explain_config("eval_test_improved", [], env_file=None, environ={})
    assert explained["train.max_steps"] == "derived from other fields"  # from train.epochs = 10


def test_print_config_and_the_environment_line(monkeypatch, capsys):
    monkeypatch.setenv("SEED", "7")
    assert main(["train", "-c", "quick_test", "--print-config"]) == 0
    out = capsys.readouterr().out
    seed_line = next(line for line in out.splitlines() if line.startswith("  seed: 7"))
    assert seed_line.endswith("# <- environment SEED=7")
    assert "  data:" not in out and "data:" in out  # YAML sections at the top level


def test_version(capsys):
    from grpolab import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"grpolab {__version__}"


# --- custom modules in the current directory under the `grpolab` script -------------------------------


def test_a_reward_module_in_the_current_directory_is_importable_under_the_console_script(tmp_path):
    (tmp_path / "my_rewards.py").write_text(
        "def digits(completions, answer, **kw):\n    return [1.0 for _ in completions]\n"
    )
    script = tmp_path / "bin" / "grpolab"  # as pip writes it: sys.path[0] is bin/, not the cwd
    script.parent.mkdir()
    script.write_text("import sys\nfrom grpolab.cli import main\nsys.exit(main())\n")
    done = subprocess.run(
        [sys.executable, str(script), "rewards", "try", "my_rewards:digits", "--completion", "1", "--answer", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1" in done.stdout


# --- the journal for a run that failed -------------------------------------------------------------------


def test_a_crashed_run_gets_its_journal_entry_with_the_reason(tmp_path):
    cfg = load("journal.exp_name=boom", "journal.hypothesis=it crashes", f"train.output_dir={tmp_path}")

    def crashing_train(cfg):
        run_dir = tmp_path / cfg.train.run_name / "2026-01-01_00-00-00"
        run_dir.mkdir(parents=True)
        import os
        import time

        write_status(run_dir, {"status": "crashed", "stop_reason": "RuntimeError: NaN", "pid": os.getpid(),
                               "updated": time.time(), "step": 3, "total_steps": 10})  # fmt: skip
        raise RuntimeError("NaN")

    with pytest.raises(RuntimeError):
        journaled(cfg, "grpolab train journal.exp_name=boom", crashing_train)
    text = (tmp_path / "JOURNAL.md").read_text()
    assert "### boom - " in text and "Run ID: grpo/2026-01-01_00-00-00" in text
    assert "**Status**: crashed (RuntimeError: NaN)" in text and "**Hypothesis**: it crashes" in text
    assert "3/10 steps" in text and "`grpolab train journal.exp_name=boom`" in text


def test_journal_entry_before_a_run_directory_exists_and_the_wandb_id():
    cfg = load()
    entry = format_entry(cfg, "grpolab train", None, KeyboardInterrupt())
    assert "**Status**: interrupted (KeyboardInterrupt: )" in entry and "Run ID: -" in entry


def test_journal_uses_the_wandb_run_id_when_wandb_ran(tmp_path):
    run_dir = tmp_path / "default" / "t"
    run_dir.mkdir(parents=True)
    write_status(run_dir, {"status": "finished", "wandb_id": "a1b2c3d4", "before": {"test/accuracy": 0.25},
                           "after": {"test/accuracy": 0.5}, "step": 4, "total_steps": 4})  # fmt: skip
    entry = format_entry(load(), "grpolab train", run_dir)
    assert "Run ID: a1b2c3d4" in entry and "test/accuracy 0.25 -> 0.5" in entry
    assert json.loads((run_dir / "status.json").read_text())["wandb_id"] == "a1b2c3d4"


def test_openr1_names_are_rewritten_to_the_built_ins():
    from grpolab.config.openr1 import openr1_reward

    # a bare name keeps what was written as its metric label
    assert openr1_reward("len_reward") == {"name": "length", "alias": "len_reward"}
    # a param of another reward is left alone (it fails later, naming the param)
    assert openr1_reward({"name": "cosine", "repetition_n_grams": 2}) == {
        "name": "cosine_scaled",
        "repetition_n_grams": 2,
        "alias": "cosine",
    }
    assert openr1_reward("numeric") == "numeric" and openr1_reward({"fn": "m:f"}) == {"fn": "m:f"}
    cfg = load_config("openr1_rewards", ["repetition_max_penalty=-0.25"])  # the preset's own entry
    (rep,) = [spec for spec in cfg.rewards.functions if spec.name == "repetition_penalty"]
    assert rep.params == {"ngram_size": 3, "max_penalty": -0.25}
    cfg = load_config(None, ["rewards=[accuracy_reward]", "eval.correctness_reward=accuracy_reward"])
    assert [spec.label for spec in cfg.rewards.functions] == ["accuracy_reward"]


# --- where the translation lives ----------------------------------------------------------------------


def test_config_alone_reads_only_our_names_and_compat_adds_the_others(monkeypatch):
    """config/load.py knows no foreign name (compat/ binds them in), so nothing below compat/ needs it."""
    from grpolab.config import load as native

    with pytest.raises(ConfigError, match="unknown config key 'optimizer'"):
        native.load_config(None, ["optimizer.learning_rate=3e-6"])
    monkeypatch.setenv("SEED", "7")
    assert native.load_config(None, ["optim.lr=3e-6"]).train.seed == native.load_config().train.seed
    cfg = load_config(None, ["optimizer.learning_rate=3e-6", "wandb_disabled=true"], env_file=None)
    assert (cfg.optim.lr, cfg.logging.wandb, cfg.train.seed) == (3e-6, False, 7)
