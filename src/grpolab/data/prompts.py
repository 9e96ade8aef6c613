"""Chat messages for a question: an optional system message, then the user's question.

The synthetic tasks' default system prompt is one short sentence on purpose: the embedded tiny
model is character-level, and every prompt character costs it context and compute. Word problems
get a prompt that asks for reasoning first, since that is where larger models gain from GRPO.
"""

from __future__ import annotations

from grpolab.config.schema import DataConfig
from grpolab.data.base import DataError, Example

SHORT_PROMPT = "Put the final answer in <answer></answer>."
REASONING_PROMPT = (
    "Think through the problem step by step and show your reasoning. "
    "Then give only the final answer, a plain number, inside <answer></answer>, "
    "for example <answer>42</answer>."
)
DEFAULT_SYSTEM_PROMPTS = {
    "arithmetic": SHORT_PROMPT,
    "small_numbers": SHORT_PROMPT,
    "mixed": SHORT_PROMPT,
    "gsm8k": REASONING_PROMPT,
    "jsonl": REASONING_PROMPT,
    "hf": REASONING_PROMPT,
}


def default_system_prompt(task: str) -> str:
    try:
        return DEFAULT_SYSTEM_PROMPTS[task]
    except KeyError:
        raise DataError(f"unknown task {task!r}; known: {', '.join(DEFAULT_SYSTEM_PROMPTS)}") from None


def system_prompt(data: DataConfig) -> str:
    """data.system_prompt when set (an empty string means no system message), else the task's."""
    return default_system_prompt(data.task) if data.system_prompt is None else data.system_prompt


def build_messages(example: Example, data: DataConfig) -> list[dict[str, str]]:
    """[{"role": "system", ...}] (unless the system prompt is "") + [{"role": "user", ...}].

    Example: task arithmetic, prompt_template "Q: {question}", question "What is 2 + 2?" ->
        [{"role": "system", "content": "Put the final answer in <answer></answer>."},
         {"role": "user", "content": "Q: What is 2 + 2?"}]
    """
    if example.messages is not None:  # a conversational prompt: the dataset's own messages
        return [dict(message) for message in example.messages]
    messages = []
    system = system_prompt(data)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": data.prompt_template.format(question=example.question)})
    return messages


def check_template(template: str) -> None:
    """A template must contain {question} and no other placeholder (str.format would raise late,
    at the first rollout, instead of now)."""
    try:
        filled = template.format(question="\0")
    except (KeyError, IndexError, ValueError) as err:
        raise DataError(
            f"data.prompt_template: only {{question}} may appear in braces (write {{{{ and }}}} for "
            f"literal braces); formatting failed with {type(err).__name__}: {err}"
        ) from None
    if "\0" not in filled:
        raise DataError(f"data.prompt_template must contain {{question}}: {template!r}")
