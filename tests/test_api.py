"""The Python API: README's code runs, the example script runs, datasets and callables reach the
rewards the way TRL passes them, a loaded model and a LoraConfig work, mistakes are one clear line,
and the command line goes through the same GRPOTrainer."""

from __future__ import annotations

import asyncio
import json
import re
import runpy
from pathlib import Path

import pytest

from grpolab.api import GRPOConfig, GRPOTrainer
from grpolab.config.load import ConfigError
from grpolab.data.base import DataError
from grpolab.rewards import RewardError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.max_steps=1", "eval.every_steps=0", "logging.quiet=true", "train.torch_threads=1"]


def small_args(tmp_path: Path, *extra: str) -> GRPOConfig:
    return GRPOConfig.load(
        "quick_test",
        *SMALL,
        f"train.output_dir={tmp_path}",
        "data.val_size=4",
        "eval.size=4",
        "data.test_size=4",
        *extra,
    )


def rows(n: int = 24, chat: bool = False) -> list[dict]:
    out = []
    for i in range(n):
        a, b = i % 7, i // 7
        question = f"What is {a} + {b}?"
        prompt = [{"role": "system", "content": "Put the final answer in <answer></answer>."}] if chat else []
        out.append(
            {
                "prompt": [*prompt, {"role": "user", "content": question}] if chat else question,
                "answer": str(a + b),
                "unit": f"u{i}",
            }
        )
    return out


@pytest.mark.slow
def test_readme_python_api_section_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README has no python block under 'Python API'"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    assert namespace["summary"].status == "finished" and namespace["summary"].steps == 2
    assert (tmp_path / "my-model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_example_script_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEPS", "1")
    monkeypatch.setenv("EVAL_ROWS", "8")
    runpy.run_path(str(ROOT / "examples" / "train_inline_reward.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "finished after 1 steps" in out and "eval/accuracy" in out
    assert list(tmp_path.glob("outputs/inline_reward/*/inline-model/model.safetensors"))


@pytest.mark.slow
def test_conversational_rows_reach_rewards_as_trl_passes_them(tmp_path):
    seen: dict[str, list] = {}

    def spy(prompts, completions, completion_ids, unit, **kwargs):
        seen.setdefault("calls", []).append((prompts, completions, completion_ids, unit, kwargs))
        return [0.5] * len(completions)

    async def judged(completions, **kwargs):  # async rewards are awaited (concurrently with others)
        await asyncio.sleep(0)
        return [float(len(c[0]["content"]) % 2) for c in completions]

    trainer = GRPOTrainer(
        model="tiny",
        reward_funcs=[spy, judged, "numeric"],
        train_dataset=rows(chat=True),
        eval_dataset=rows(4, chat=True),
        args=small_args(tmp_path),
    )
    summary = trainer.train()
    assert summary.status == "finished"
    prompts, completions, ids, unit, kwargs = seen["calls"][-1]
    assert prompts[0][-1]["role"] == "user" and prompts[0][0]["role"] == "system"  # the dataset's messages
    assert completions[0][0]["role"] == "assistant" and isinstance(completions[0][0]["content"], str)
    assert isinstance(ids[0][0], int) and re.fullmatch(r"u\d+", unit[0])  # any column, by its own name
    assert kwargs["answer"][0].isdigit()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval/accuracy"] <= 1.0 and "eval/rewards/judged/mean" in metrics


@pytest.mark.slow
def test_a_loaded_model_with_a_lora_config(tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpolab.models.tiny_model import TINY_DIR

    model = AutoModelForCausalLM.from_pretrained(TINY_DIR)
    tokenizer = AutoTokenizer.from_pretrained(TINY_DIR)
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs="numeric",
        train_dataset=rows(),
        args=small_args(tmp_path),
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.args.model.finetune == "lora" and trainer.args.model.lora_rank == 2
    trainer.train()
    trainer.save_model(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_config_by_section_or_preset_with_overrides():
    assert GRPOConfig(train={"max_steps": 3}, grpo={"beta": 0.0}).train.max_steps == 3
    cfg = GRPOConfig.load("quick_test", "optim.lr=0.002", grpo__beta=0.5, **{"train.seed": 7})
    assert (cfg.train.run_name, cfg.optim.lr, cfg.grpo.beta, cfg.train.seed) == ("quick_test", 0.002, 0.5, 7)
    assert isinstance(cfg, GRPOConfig)


def test_api_mistakes_are_one_line_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.micro_batch_size \(3\) must divide"):
        GRPOConfig(train={"questions_per_step": 2, "micro_batch_size": 3}, grpo={"num_generations": 4})
    with pytest.raises(ConfigError, match=r"unknown config key 'grpo\.num_generation'; did you mean"):
        GRPOConfig(grpo={"num_generation": 4})
    with pytest.raises(ConfigError, match="reward_weights: 1 weights for 2"):
        GRPOTrainer(reward_funcs=["numeric", "answer_format"], reward_weights=[1.0], args=small_args(tmp_path))

    def needs_tolerance(completions, tolerance, **kwargs):
        return [0.0] * len(completions)

    # a column the dataset lacks: named before any model is loaded
    with pytest.raises(RewardError, match=r"needs 'tolerance'.*columns: .*unit"):
        GRPOTrainer(reward_funcs=[needs_tolerance], train_dataset=rows(), args=small_args(tmp_path))
    bad = rows()
    bad[3]["prompt"] = 42
    with pytest.raises(DataError, match=r"train_dataset: row 3: column 'prompt' must be a string"):
        GRPOTrainer(reward_funcs="numeric", train_dataset=bad, args=small_args(tmp_path))
    with pytest.raises(DataError, match=r"row 0: no 'prompt' column"):
        GRPOTrainer(reward_funcs="numeric", train_dataset=[{"text": "hi"}], args=small_args(tmp_path))

    def short(completions, **kwargs):
        return [float(len(c) < 10) for c in completions]

    # no 'answer' column: the built-in correctness reward of evaluation would score nothing
    no_answer = [{"prompt": r["prompt"]} for r in rows()]
    with pytest.raises(ConfigError, match=r"eval\.correctness_reward.*\(short\)"):
        GRPOTrainer(reward_funcs=[short], train_dataset=no_answer, args=small_args(tmp_path))


def test_api_arguments_are_one_line_naming_the_argument(tmp_path):
    """Before: model=123 was looked up on the hub (a connection error), a NaN weight was a raw
    pydantic error, r=0 went through to peft, and a step larger than the data failed in the sampler
    after the model had loaded."""
    from peft import LoraConfig

    args = small_args(tmp_path)
    with pytest.raises(ConfigError, match=r"^model: expected a name, a directory or a loaded model, got 123$"):
        GRPOTrainer(model=123, reward_funcs="numeric", train_dataset=rows(), args=args)
    with pytest.raises(ConfigError, match=r"^reward_weights\[1\]: nan is not a finite number$"):
        GRPOTrainer(reward_funcs=["numeric", "answer_format"], reward_weights=[1.0, float("nan")], args=args)
    with pytest.raises(ConfigError, match=r"^peft_config: r \(the LoRA rank\) must be a positive integer, got 0$"):
        GRPOTrainer(reward_funcs="numeric", train_dataset=rows(), args=args, peft_config=LoraConfig(r=0))
    # 24 rows (16 after holding out val + test)
    big_step = small_args(tmp_path, "train.questions_per_step=40", "grpo.num_generations=2")
    with pytest.raises(ConfigError, match=r"questions_per_step \(40\) is larger than the training set \((16|24) "):
        GRPOTrainer(reward_funcs="numeric", train_dataset=rows(), args=big_step)


def needs_unit(completions, unit, **kwargs):
    return [float(u.startswith("u")) for u in unit]  # None.startswith: what a row without 'unit' gave


@pytest.mark.parametrize(
    ("row", "reward", "message"),
    [
        ({"answer": [1, 0]}, "numeric", r"row 3: column 'answer' holds a list \(\[1, 0\]\)"),  # was "[1, 0]"
        ({"answer": float("inf")}, "numeric", r"row 3: column 'answer' holds inf, which is not a finite"),  # 1e400
        ({"answer": "NaN"}, "numeric", r"row 3: column 'answer' holds 'NaN', which is not a finite"),
        ({"prompt": [{"role": "banana", "content": "hi"}]}, "numeric", r"row 3: prompt message 0 has role 'banana'"),
        (
            {"prompt": [{"role": "user", "content": None}]},
            "numeric",
            r"row 3: prompt message 0 \(user\) has content None",
        ),
        ({"drop": "unit"}, needs_unit, r"row 3: no column 'unit', which reward 'needs_unit' needs"),
        ({"drop": "answer"}, "numeric", r"row 3: no column 'answer', which reward 'numeric' needs"),
    ],
)
def test_api_rows_get_the_cli_row_checks(tmp_path, row, reward, message):
    """Before: the list answer trained as the string "[1, 0]", inf/nan answers scored None
    everywhere, a banana role and a None content reached the chat template, and a row without a
    column a reward reads failed mid-run with an AttributeError naming no row."""
    data = rows()
    column = row.pop("drop", None)
    if column:
        del data[3][column]
    data[3].update(row)
    with pytest.raises(DataError, match=r"train_dataset: " + message):
        GRPOTrainer(reward_funcs=[reward], train_dataset=data, args=small_args(tmp_path))


@pytest.mark.slow
def test_a_bad_reward_return_value_names_the_reward_and_sample(tmp_path):
    def broken(completions, **kwargs):
        return ["high"] * len(completions)

    trainer = GRPOTrainer(reward_funcs=[broken, "numeric"], train_dataset=rows(), args=small_args(tmp_path))
    with pytest.raises(RewardError, match=r"reward 'broken' returned 'high' for sample 0; expected float\|None"):
        trainer.train()


@pytest.mark.slow
def test_cli_train_goes_through_the_python_api(tmp_path, monkeypatch):
    from grpolab import api
    from grpolab.cli.main import main

    built: list[GRPOTrainer] = []
    original = api.GRPOTrainer.train

    def recording_train(self):
        built.append(self)
        return original(self)

    monkeypatch.setattr(api.GRPOTrainer, "train", recording_train)
    assert main(["train", "-c", "quick_test", *SMALL, f"train.output_dir={tmp_path}"]) == 0
    assert len(built) == 1 and built[0].args.train.run_name == "quick_test"
    assert len(built[0].trainer.splits.test) == 16  # the preset's task, split by the config


@pytest.mark.slow
def test_an_environment_class_runs_tool_episodes(tmp_path):
    from functools import partial

    from grpolab.envs import CalculatorEnv

    args = small_args(tmp_path, "generation.max_new_tokens=96", "agent.max_total_tokens=320")
    trainer = GRPOTrainer(
        model="tiny-agent", environment=partial(CalculatorEnv, system_prompt=""), reward_funcs="numeric",
        train_dataset=rows(), args=args,
    )  # fmt: skip
    assert trainer.args.agent.enabled
    summary = trainer.train()
    rows_logged = [json.loads(line) for line in (summary.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_row = next(r for r in rows_logged if "loss" in r)
    assert "tokens/masked_fraction" in train_row  # agent rollouts: tool output is not trained
    with pytest.raises(ConfigError, match="environment: pass the class"):
        GRPOTrainer(environment=CalculatorEnv(), reward_funcs="numeric", train_dataset=rows(), args=args)
