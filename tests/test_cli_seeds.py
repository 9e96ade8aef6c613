"""Each seed's own command line, as its users wrote it, run for a couple of steps on the tiny model.

The seeds (shared/reference): the agent trainer's .env (000), agent-tunix's Hydra keys (001), the
canonical arithmetic script's flags (002), the eval config as a positional YAML (003), open-r1's
reward and param names (004; its reward mix also runs as `-c openr1_rewards` in test_reward_presets.py).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from grpolab.cli.main import main
from grpolab.compat.env_vars import ENV_PREFIX, ENV_VARS
from run_helpers import read_metrics

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "gsm8k_style.jsonl"
SMALL = ["eval.size=4", "data.val_size=4", "data.test_size=4", "logging.quiet=true", "train.torch_threads=1"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No config variable from the shell gets in, and none that main() loads from a .env gets out
    (load_dotenv writes os.environ, which outlives the test)."""
    saved = dict(os.environ)
    for name in [*ENV_VARS, *(ENV_PREFIX + name for name in ENV_VARS), "OPENROUTER_API_KEY"]:
        os.environ.pop(name, None)
    monkeypatch.chdir(tmp_path)
    yield
    os.environ.clear()
    os.environ.update(saved)


def only_run(out: Path) -> Path:
    (run_dir,) = [p.parent for p in out.glob("*/*/status.json")]
    return run_dir


def saved_config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


class Judge(ThreadingHTTPServer):
    """An OpenAI-style chat endpoint on 127.0.0.1 that records the Authorization header it gets."""

    daemon_threads = True

    def __init__(self) -> None:
        self.auth: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(handler) -> None:  # `handler`: the request; `self`: the server
                handler.rfile.read(int(handler.headers["Content-Length"]))
                self.auth.append(handler.headers.get("Authorization"))
                body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "SCORE: 1"}}]}).encode()
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)


def judge_server() -> Iterator[Judge]:
    server = Judge()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_agent_trainer_env_file_end_to_end(tmp_path, capsys):
    """000: every variable of the agent trainer's .env reaches its field; the API key reaches the judge
    and nothing in the run directory; `--mode masked` as they typed it."""
    secret = "sk-or-test-4f1e9a"
    for server in judge_server():
        dotenv = [
            "MODEL_NAME=tiny-agent", "TRAIN_DATASET_SIZE=20", "EVAL_DATASET_SIZE=4", "PER_DEVICE_TRAIN_BATCH_SIZE=2",
            "NUM_GENERATIONS=2", "MAX_STEPS=2", "LEARNING_RATE=1e-4", "BETA=0.01", "MAX_TURNS=2", "MAX_TOKENS=24",
            "PATIENCE=3", "OUTPUT_DIR=out/grpo_masked", "SEED=3", "VERBOSE=true", f"OPENROUTER_API_KEY={secret}",
        ]  # fmt: skip
        (tmp_path / ".env").write_text("\n".join(dotenv))
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        judge = {"name": "judge", "model": "m", "base_url": url, "weight": 0.1, "max_retries": 0}
        argv = [
            "train", "-c", "agent_tiny", "--mode", "masked", "data.test_size=4", "data.val_size=4",
            "eval.every_steps=1", "logging.sample_every=1", "train.torch_threads=1",
            f"rewards={json.dumps(['numeric', judge])}",
        ]  # fmt: skip
        code = main(argv)
        assert code == 0
        assert server.auth and set(server.auth) == {f"Bearer {secret}"}  # the .env key, sent to the judge
    run_dir = only_run(tmp_path / "out" / "grpo_masked")
    cfg = saved_config(run_dir)
    assert cfg["model"]["name"] == "tiny-agent" and cfg["agent"]["mode"] == "masked"
    assert (cfg["data"]["train_size"], cfg["eval"]["size"], cfg["train"]["questions_per_step"]) == (20, 4, 2)
    assert (cfg["grpo"]["num_generations"], cfg["train"]["max_steps"], cfg["optim"]["lr"]) == (2, 2, 1e-4)
    assert (cfg["grpo"]["beta"], cfg["agent"]["max_turns"], cfg["generation"]["max_new_tokens"]) == (0.01, 2, 24)
    assert (cfg["train"]["patience"], cfg["train"]["seed"], cfg["logging"]["verbose"]) == (3, 3, True)
    for path in [*run_dir.rglob("*"), tmp_path / "out" / "grpo_masked" / "JOURNAL.md"]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    err = capsys.readouterr().err
    assert "set from the environment" in err and "SEED=3 (train.seed)" in err
    assert "· reward " in err and "judge=1" in err  # VERBOSE: sample panels with each reward's score
    assert "### agent_tiny" in (tmp_path / "out" / "grpo_masked" / "JOURNAL.md").read_text()


def test_agent_tunix_command_line_then_resume_from_checkpoint_dir(tmp_path):
    """001: the Tunix user's keys after `grpolab train`; then `checkpoint_dir=` continues that run."""
    tunix = [
        "train", "-c", "gsm8k_lora", "model=tiny", f"data.path={DATA}", "+experiment=quick_test",
        "optimizer.learning_rate=1e-4", "optimizer.warmup_ratio=0.1", "optimizer.max_grad_norm=0.1",
        "training.micro_batch_size=2", "training.num_epochs=1", "training.save_interval_steps=1",
        "generation.max_generation_steps=12", "generation.max_prompt_length=128", "grpo.num_generations=2",
        "model.lora_rank=4", "wandb_disabled=true", "data.train_size=20", "train.output_dir=out", *SMALL,
    ]  # fmt: skip
    assert main([*tunix, "training.num_batches=2"]) == 0
    run_dir = only_run(tmp_path / "out")
    cfg = saved_config(run_dir)
    assert (cfg["optim"]["lr"], cfg["optim"]["max_grad_norm"], cfg["train"]["questions_per_step"]) == (1e-4, 0.1, 2)
    assert (cfg["train"]["max_steps"], cfg["generation"]["max_new_tokens"], cfg["model"]["lora_rank"]) == (2, 12, 4)
    assert (run_dir / "checkpoints" / "step-2").is_dir()

    assert main([*tunix, "training.num_batches=3", f"checkpoint_dir={run_dir / 'checkpoints'}"]) == 0
    assert only_run(tmp_path / "out") == run_dir  # the same run, continued
    assert "resumed from" in (run_dir / "train.log").read_text()
    assert max(row["step"] for row in read_metrics(run_dir)) == 3


def test_canonical_script_command_line(tmp_path):
    """002: the script's flags, --batch_size in completions; its journal entry."""
    argv = [
        "train", "-c", "arithmetic", "--model_name", "tiny", "--dataset_type", "small_numbers",
        "--n_samples", "4", "--batch_size", "8", "--num_generations", "4", "--learning_rate", "1e-4",
        "--temperature", "0.9", "--epochs", "1", "--beta", "0.1", "--seed", "3",
        "--exp_name", "small_overfit", "--tags", "small", "quick", "--hypothesis", "beta 0.1 keeps it stable",
        "eval.pass_k=[]", "generation.max_new_tokens=12", "train.output_dir=out", *SMALL,
    ]  # fmt: skip
    assert main(argv) == 0
    run_dir = only_run(tmp_path / "out")
    cfg = saved_config(run_dir)
    assert (cfg["data"]["task"], cfg["data"]["train_size"], cfg["train"]["questions_per_step"]) == (
        "small_numbers",
        4,
        2,
    )
    assert (cfg["grpo"]["num_generations"], cfg["train"]["max_steps"], cfg["grpo"]["beta"]) == (4, 2, 0.1)
    journal = (tmp_path / "out" / "JOURNAL.md").read_text()
    assert "### small_overfit - " in journal and "**Tags**: small, quick" in journal
    assert "**Hypothesis**: beta 0.1 keeps it stable" in journal and "--batch_size 8" in journal
    assert "**Status**: finished" in journal and "2/2 steps" in journal
    assert main(["journal", str(tmp_path / "out" / "JOURNAL.md")]) == 0


def test_eval_config_yaml_as_a_positional_path(tmp_path):
    """003: `grpolab train path/to/eval_test_improved.yaml`, the file in its own (flat) key names."""
    path = tmp_path / "experiment_configs" / "eval_test_improved.yaml"
    path.parent.mkdir()
    path.write_text("train_samples: 20\ntest_samples: 4\nlearning_rate: 5e-5\nnum_epochs: 1\nbeta: 0.05\n"
                    "temperature: 0.9\neval_temperature: 0.8\n")  # fmt: skip
    argv = ["train", str(path), "train.questions_per_step=10", "grpo.num_generations=2",
            "generation.max_new_tokens=12", "train.output_dir=out", *SMALL]  # fmt: skip
    assert main(argv) == 0
    cfg = saved_config(only_run(tmp_path / "out"))
    assert (cfg["data"]["train_size"], cfg["optim"]["lr"], cfg["train"]["max_steps"]) == (20, 5e-5, 2)
    assert (cfg["grpo"]["beta"], cfg["generation"]["temperature"], cfg["eval"]["temperature"]) == (0.05, 0.9, 0.8)


def test_canonical_script_small_numbers_with_its_batch_of_256(tmp_path):
    """002's own line `-c arithmetic --dataset_type small_numbers --batch_size 256 --num_generations 16`:
    the preset's 1000 training questions do not fit small_numbers' 400, so the type brings its preset's
    split sizes (200 / 50 / 100); 256 completions = 16 questions x 16 in one pass, as in the script."""
    argv = [
        "train", "-c", "arithmetic", "--model_name", "tiny", "--dataset_type", "small_numbers",
        "--batch_size", "256", "--num_generations", "16", "train.max_steps=1", "eval.every_steps=0",
        "eval.pass_k=[]", "generation.max_new_tokens=8", "train.output_dir=out", "logging.quiet=true",
        "train.torch_threads=1", "data.test_size=4", "eval.size=4",
    ]  # fmt: skip
    assert main(argv) == 0
    cfg = saved_config(only_run(tmp_path / "out"))
    assert (cfg["data"]["task"], cfg["data"]["train_size"], cfg["data"]["val_size"]) == ("small_numbers", 200, 50)
    assert cfg["data"]["test_size"] == 4  # the line's own key=value wins over the type's size
    assert (cfg["train"]["questions_per_step"], cfg["grpo"]["num_generations"], cfg["grpo"]["beta"]) == (16, 16, 0.1)
    assert cfg["train"]["micro_batch_size"] == 0


def test_agent_tunix_full_training_experiment(tmp_path):
    """001's production line `model=... +experiment=full_training`: the preset's length, checkpoints
    every 200 steps, no early stop."""
    argv = [
        "train", "-c", "gsm8k_lora", "model=tiny", f"data.path={DATA}", "+experiment=full_training",
        "training.num_batches=1", "data.train_size=20", "grpo.num_generations=2", "training.micro_batch_size=2",
        "generation.max_generation_steps=8", "train.output_dir=out", *SMALL,
    ]  # fmt: skip
    assert main(argv) == 0
    cfg = saved_config(only_run(tmp_path / "out"))
    assert (cfg["train"]["save_every"], cfg["train"]["patience"], cfg["train"]["max_steps"]) == (200, 0, 1)
    assert cfg["model"]["lora_rank"] == 32  # the rest is the preset's


def test_openr1_reward_and_param_names(tmp_path):
    """004: open-r1's function names in `reward_funcs`, its param names inside an entry and as
    top-level keys; metrics keep the names written, the params reach the built-ins."""
    rewards = [
        "accuracy_reward", "format_reward", "tag_count_reward", "reasoning_steps_reward",
        {"name": "cosine_scaled_reward", "cosine_min_value_wrong": 0.0, "cosine_max_value_wrong": -0.5},
        "repetition_penalty_reward", "len_reward",
    ]  # fmt: skip
    argv = [
        "train", "-c", "openr1_rewards", "model=tiny", f"data.path={DATA}", "+experiment=quick_test",
        f"reward_funcs={json.dumps(rewards)}", "cosine_max_len=500", "repetition_n_grams=2",
        "repetition_max_penalty=-0.5", "train.max_steps=1", "data.train_size=20", "generation.max_new_tokens=8",
        "train.output_dir=out", *SMALL,
    ]  # fmt: skip
    assert main(argv) == 0
    run_dir = only_run(tmp_path / "out")
    specs = {spec["alias"]: spec for spec in saved_config(run_dir)["rewards"]["functions"]}
    assert specs["len_reward"]["name"] == "length" and specs["accuracy_reward"]["name"] == "accuracy"
    cosine = specs["cosine_scaled_reward"]
    assert cosine["name"] == "cosine_scaled"
    assert cosine["params"] == {"min_value_wrong": 0.0, "max_value_wrong": -0.5, "max_len": 500}
    assert specs["repetition_penalty_reward"]["params"] == {"ngram_size": 2, "max_penalty": -0.5}
    train_row = next(row for row in read_metrics(run_dir) if "loss" in row)
    for label in specs:
        assert f"rewards/{label}/mean" in train_row or f"rewards/{label}/none_frac" in train_row, label
    assert main(["train", "-c", "quick_test", "cosine_max_len=500"]) == 2  # no cosine reward to set it on
