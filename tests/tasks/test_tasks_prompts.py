"""Chat messages and default system prompts."""

from __future__ import annotations

import pytest

from grpolab.config.schema import DataConfig
from grpolab.data import DataError, Example, build_messages, default_system_prompt, validate_data

EXAMPLE = Example(question="What is 2 + 3?", answer="5", category="add")


def test_default_system_prompt_then_templated_question() -> None:
    data = DataConfig(prompt_template="Q: {question}\nA:")
    assert build_messages(EXAMPLE, data) == [
        {"role": "system", "content": "Put the final answer in <answer></answer>."},
        {"role": "user", "content": "Q: What is 2 + 3?\nA:"},
    ]


def test_custom_system_prompt() -> None:
    messages = build_messages(EXAMPLE, DataConfig(system_prompt="Be brief."))
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1] == {"role": "user", "content": "What is 2 + 3?"}


def test_empty_system_prompt_means_no_system_message() -> None:
    assert build_messages(EXAMPLE, DataConfig(system_prompt="")) == [{"role": "user", "content": "What is 2 + 3?"}]


def test_question_braces_are_not_formatted() -> None:
    # A question may itself contain braces (code, sets); only the template is formatted.
    example = Example(question="Size of {1, 2}?", answer="2", category="x")
    assert build_messages(example, DataConfig(system_prompt=""))[0]["content"] == "Size of {1, 2}?"


@pytest.mark.parametrize("task", ["arithmetic", "small_numbers", "mixed"])
def test_synthetic_tasks_share_the_short_prompt(task: str) -> None:
    assert default_system_prompt(task) == "Put the final answer in <answer></answer>."


@pytest.mark.parametrize("task", ["gsm8k", "jsonl", "hf"])
def test_word_problem_prompt_asks_for_reasoning_and_answer_tag(task: str) -> None:
    prompt = default_system_prompt(task)
    assert "step by step" in prompt and "<answer></answer>" in prompt


def test_unknown_task() -> None:
    with pytest.raises(DataError, match="unknown task 'poetry'"):
        default_system_prompt("poetry")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{prompt}", "only {question}"),
        ("Answer {question} in {n} words", "only {question}"),
        ("Hi", "must contain"),
    ],
)
def test_bad_template_caught_before_training(template: str, message: str) -> None:
    data = DataConfig(prompt_template=template, train_size=10, val_size=5, test_size=5)
    with pytest.raises(DataError, match=r"data\.prompt_template") as err:
        validate_data(data)
    assert message in str(err.value)
