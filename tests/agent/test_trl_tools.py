"""TRL's tool API through grpolab's one agent loop: functions and environment methods as tools with
get_json_schema's schemas, reset/get_reward, a dict of environments routed by the `environment`
column, and tools that misbehave (bad signature, raising, hanging)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from agent_fakes import ScriptedGenerator, Turn, char_tokenizer
from transformers.utils import get_json_schema

from grpolab.api import GRPOConfig, GRPOTrainer
from grpolab.compat.trl_args import TRL_ARGS
from grpolab.config.load import ConfigError
from grpolab.data.base import Example
from grpolab.envs.trl_tools import build_trl_environment
from grpolab.rewards.api import BoundReward, RewardInputs, RewardSet
from grpolab.rewards.environment import with_environment_rewards
from grpolab.rewards.inputs import reward_inputs
from grpolab.rollout.agent_metrics import agent_metrics
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.multi_turn import run_agent_rollouts

QWEN = char_tokenizer()  # renders each tool's JSON schema in the system turn


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.

    Returns:
        The product.
    """
    return a * b


def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise RuntimeError(f"boom: {reason}")


RELEASE = threading.Event()  # never set: a hung tool's thread waits on it (and ends with the test session)


def hang(seconds: int) -> str:
    """Never answers in time.

    Args:
        seconds: How long to wait.
    """
    RELEASE.wait(seconds)
    return "late"


class CounterEnv:
    """TRL's IncrementEnv: the target comes from the row, the counter from the tool calls."""

    def reset(self, target: int, **kwargs: Any) -> str:
        self.counter, self.target, self.columns = 0, target, sorted(kwargs)
        return f" Reach {target}."

    def get_reward(self) -> float:
        return float(self.counter == self.target)

    def increment(self, step: int) -> int:
        """Add to the counter.

        Args:
            step: How much to add.
        """
        self.counter += step
        return self.counter

    def _helper(self) -> None:  # private: not a tool
        pass


class GameEnv:
    def reset(self, **kwargs: Any) -> None:
        self.moves: list[str] = []

    def move(self, action: str) -> str:
        """Move on the board.

        Args:
            action: up, down, left or right.
        """
        self.moves.append(action)
        return f"moved {action}"


def call(name: str, **arguments: Any) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def episodes(setup, scripts, rows, timeout_s=None):
    generator = ScriptedGenerator(QWEN, scripts)
    return run_agent_rollouts(
        generator, QWEN, setup.env_factory, rows,
        params=SamplingParams(max_new_tokens=400, num_samples=1), max_turns=4, max_total_tokens=20_000,
    )  # fmt: skip


def test_a_function_tool_has_get_json_schemas_schema_in_the_prompt():
    setup = build_trl_environment([multiply], None, tool_timeout_s=None)
    env = setup.env_factory()
    messages = env.reset({"prompt": "Q0?", "system_prompt": ""})
    assert env.tools == [get_json_schema(multiply)]
    [rollout] = episodes(setup, {(0, 0): [Turn(call("multiply", a=6, b=7)), Turn("42")]}, [{"prompt": "Q0?"}])
    expected = QWEN.apply_chat_template(messages, tools=[get_json_schema(multiply)], add_generation_prompt=True)
    assert rollout.prompt_ids == list(expected["input_ids"])  # the schema the model sees is get_json_schema's
    assert rollout.messages[2] == {"role": "tool", "name": "multiply", "content": "42"}  # str(6 * 7)


def test_a_tool_without_type_hint_or_argument_doc_is_one_line_before_the_model_loads(tmp_path):
    def no_hint(a, b: int) -> int:
        """Add.

        Args:
            a: one.
            b: two.
        """
        return b

    def undocumented(a: int, b: int) -> int:
        """Add.

        Args:
            a: one.
        """
        return a + b

    args = GRPOConfig.load("quick_test", f"train.output_dir={tmp_path}")
    dataset = [{"prompt": "Q?", "answer": "1"}] * 24
    for fn, missing in (
        (no_hint, "Argument a is missing a type hint"),
        (undocumented, "no description for the argument 'b'"),
    ):
        # a model that does not exist: the tool error comes first, so nothing was loaded
        with pytest.raises(ConfigError) as err:
            GRPOTrainer(model="no-such/model", tools=[fn], reward_funcs="numeric", train_dataset=dataset, args=args)
        message = str(err.value)
        assert "\n" not in message and fn.__qualname__ in message and missing in message

    class BadEnv:
        def reset(self, **kwargs: Any) -> None: ...

        def act(self, x: int) -> int:
            return x

    with pytest.raises(ConfigError, match=r"BadEnv\.act cannot be a tool: .*no docstring"):
        build_trl_environment([], BadEnv, None)

    class NoReset:
        pass

    with pytest.raises(ConfigError, match="NoReset has no reset"):
        build_trl_environment([], NoReset, None)


def test_a_raising_tool_answers_with_its_error_and_the_episode_goes_on():
    setup = build_trl_environment([explode, multiply], None, tool_timeout_s=None)
    script = [Turn(call("explode", reason="x") + call("multiply", a=2, b=3)), Turn("6")]
    [rollout] = episodes(setup, {(0, 0): script}, [{"prompt": "Q0?"}])
    tool_messages = [m for m in rollout.messages if m["role"] == "tool"]
    assert tool_messages[0]["content"] == "Error: explode failed: RuntimeError: boom: x"
    assert tool_messages[1]["content"] == "6"
    assert rollout.info["stop_reason"] == "done" and rollout.info["turns"] == 2  # the model answered after it
    metrics = agent_metrics([rollout])
    assert metrics["tools/failure_frequency"] == 0.5  # 1 failed of 2 calls
    assert metrics["tools/explode/failures"] == 1.0 and metrics["tools/multiply/failures"] == 0.0


def test_a_hanging_tool_times_out_and_the_episode_goes_on():
    setup = build_trl_environment([hang, multiply], None, tool_timeout_s=0.2)
    script = [Turn(call("hang", seconds=60) + call("multiply", a=2, b=3)), Turn("6")]
    start = time.perf_counter()
    [rollout] = episodes(setup, {(0, 0): script}, [{"prompt": "Q0?"}])
    assert time.perf_counter() - start < 10  # 0.2 s for the hung call, not its 60
    tool_messages = [m for m in rollout.messages if m["role"] == "tool"]
    assert tool_messages[0]["content"] == "Error: hang timed out after 0.2 s"
    assert tool_messages[1]["content"] == "6"
    assert rollout.info["stop_reason"] == "done"
    assert agent_metrics([rollout])["tools/failure_frequency"] == 0.5


def test_an_environment_class_resets_from_the_row_and_owns_its_reward():
    setup = build_trl_environment([], CounterEnv, tool_timeout_s=None)
    assert [r.label for r in with_environment_rewards(RewardSet([]), setup, False).rewards] == ["CounterEnv"]
    rows = [{"prompt": "Q0?", "target": 3, "answer": "3"}, {"prompt": "Q1?", "target": 5, "answer": "5"}]
    scripts = {
        (0, 0): [Turn(call("increment", step=1) + call("increment", step=2)), Turn("3")],
        (1, 0): [Turn(call("increment", step=4)), Turn("4")],
    }
    rollouts = episodes(setup, scripts, rows)
    env = rollouts[0].info["environment"]
    assert env.tools == [get_json_schema(CounterEnv.increment)]  # public methods but reset/get_reward
    assert rollouts[0].messages[0] == {"role": "user", "content": "Q0? Reach 3."}  # reset's text appended
    assert env.user_environment.columns == ["answer", "prompt"]  # the row's other columns
    examples = [
        Example(question=r["prompt"], answer=r["answer"], category="", fields={"target": r["target"]}) for r in rows
    ]
    seen: list[Any] = []

    def reads_environments(completions, environments):  # TRL's `environments` reward input
        seen.extend(environments)
        return [0.0] * len(completions)

    base = RewardSet([BoundReward("reads_environments", reads_environments, 1.0, {})])
    scores = with_environment_rewards(base, setup, True).score(reward_inputs(examples, rollouts))
    assert scores.per_function["CounterEnv"] == [1.0, 0.0]  # 1+2 == 3; 4 != 5
    assert [type(e) for e in seen] == [CounterEnv, CounterEnv]
    # without reward_funcs the environment's reward is the only one, as in TRL
    assert with_environment_rewards(base, setup, False).labels == ["CounterEnv"]


def test_a_dict_of_environments_shows_each_prompt_only_its_own_tools():
    setup = build_trl_environment([multiply], {"counter": CounterEnv, "game": GameEnv}, tool_timeout_s=None)
    rows = [
        {"prompt": "Q0?", "environment": "counter", "target": 1},
        {"prompt": "Q1?", "environment": "game", "target": 0},
    ]
    scripts = {
        (0, 0): [Turn(call("move", action="up")), Turn("x")],
        (1, 0): [Turn(call("move", action="up")), Turn("y")],
    }
    counter, game = episodes(setup, scripts, rows)
    counter_prompt, game_prompt = QWEN.decode(counter.prompt_ids), QWEN.decode(game.prompt_ids)
    assert '"increment"' in counter_prompt and '"move"' not in counter_prompt
    assert '"move"' in game_prompt and '"increment"' not in game_prompt
    assert '"multiply"' in counter_prompt and '"multiply"' in game_prompt  # standalone tools go everywhere
    # the counter episode cannot call the game's tool; the game episode can
    assert counter.messages[2]["content"].startswith("Error: unknown tool 'move'")
    assert game.messages[2]["content"] == "moved up"
    assert "environment" not in counter.info["environment"].user_environment.columns  # routing, not data
    assert [r.label for r in with_environment_rewards(RewardSet([]), setup, False).rewards] == [
        "CounterEnv"
    ]  # GameEnv has no get_reward
    with pytest.raises(ConfigError, match="train_dataset row 1: environment='gmae' is not one of"):
        setup.check_rows([rows[0], {**rows[1], "environment": "gmae"}], "train_dataset")


def test_single_turn_rewards_get_no_environments():
    inputs = RewardInputs(prompts=["q"], completions=["c"], completion_ids=[[1]], rows=[{}])
    assert inputs.keywords()["environments"] is None


def test_max_tool_calling_iterations_counts_the_turns_after_the_first():
    row = TRL_ARGS["max_tool_calling_iterations"]
    assert row.target == "agent.max_turns"
    assert row.convert is not None and row.convert(0) == 1 and row.convert(3) == 4
    with pytest.raises(ValueError, match="max_tool_calling_iterations"):
        row.convert(None)


def test_a_template_that_ignores_tools_gets_the_schemas_in_the_system_prompt():
    plain = char_tokenizer(  # SmolLM2-style ChatML: `tools` is never rendered
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    setup = build_trl_environment([multiply], None, tool_timeout_s=None)
    env = setup.env_factory()
    env.bind_tokenizer(plain)
    system, user = env.reset({"prompt": "Q0?", "system_prompt": "Be brief."})
    assert system["content"].startswith("Be brief.\n\nYou can use these tools:\n")
    assert json.dumps(get_json_schema(multiply)["function"]) in system["content"]
    assert "<tool_call>" in system["content"] and user == {"role": "user", "content": "Q0?"}
    env.bind_tokenizer(QWEN)  # a template that renders the tools: nothing added
    assert env.reset({"prompt": "Q0?", "system_prompt": "Be brief."})[0]["content"] == "Be brief."


async def async_add(a: int, b: int) -> int:
    """Add asynchronously.

    Args:
        a: The first term.
        b: The second term.
    """
    await asyncio.sleep(0)
    return a + b


@pytest.mark.parametrize("timeout_s", [None, 5.0])
def test_an_async_tool_runs_with_and_without_a_time_limit_also_inside_a_running_loop(timeout_s):
    env = build_trl_environment([async_add], None, tool_timeout_s=timeout_s).env_factory()
    env.reset({"prompt": "Q0?"})
    message = call("async_add", a=2, b=3)
    assert env.step(message).observations[0]["content"] == "5"

    async def in_a_notebook():  # the caller's thread already runs an event loop
        return env.step(message)

    assert asyncio.run(in_a_notebook()).observations[0]["content"] == "5"
