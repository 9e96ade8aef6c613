"""Environments: reset/step behaviour of the built-ins and load_env resolution."""

from __future__ import annotations

import json

import pytest

from grpolab.envs.env import CalculatorEnv, PythonEnv, ToolEnv, load_env


def call(name: str, **arguments: str) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_reset_builds_system_and_user_messages():
    env = CalculatorEnv()
    messages = env.reset({"question": "What is 2+2?", "system_prompt": "Answer in <answer> tags."})
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("Answer in <answer> tags.\n\nYou can use these tools:")
    assert "<tool_call>" in messages[0]["content"] and messages[1]["content"] == "What is 2+2?"
    assert env.tools[0]["function"]["name"] == "calculator"
    # "" drops the tool instructions (for templates that explain tools themselves); "prompt" wins.
    bare = CalculatorEnv(system_prompt="").reset({"question": "q", "prompt": "Question: q"})
    assert bare == [{"role": "user", "content": "Question: q"}]


def test_an_answer_without_a_tool_call_ends_the_episode():
    env = CalculatorEnv()
    env.reset({"question": "q"})
    result = env.step("The answer is 4.")
    assert result.done and result.observations == []
    assert result.info == {"tool_calls": 0, "tool_failures": 0, "per_tool": {}}
    assert env.final_reward() is None


def test_calls_are_answered_in_order_and_counted_per_tool():
    env = CalculatorEnv()
    env.reset({"question": "q"})
    message = call("calculator", expression="12*34") + call("calculator", expression="1/0") + call("search", q="x")
    result = env.step(message + "<tool_call>{bad json</tool_call>")
    assert not result.done
    assert [o["content"] for o in result.observations] == [
        "408",
        "Error: division by zero in /",
        "Error: unknown tool 'search'; available: calculator",
        "Error: malformed tool call: invalid JSON (Expecting property name enclosed in double quotes)",
    ]
    assert all(o["role"] == "tool" for o in result.observations)
    assert result.info["tool_calls"] == 4 and result.info["tool_failures"] == 3
    assert result.info["per_tool"] == {
        "calculator": {"calls": 2, "failures": 1},
        "_invalid": {"calls": 2, "failures": 2},
    }


def test_too_many_calls_in_one_message_are_refused_not_run():
    env = CalculatorEnv(max_calls_per_turn=1)
    env.reset({"question": "q"})
    result = env.step(call("calculator", expression="1+1") * 3)
    assert [o["content"] for o in result.observations] == ["2"] + ["Error: at most 1 tool calls per message"] * 2


def test_python_env_runs_code():
    env = PythonEnv(timeout_s=2.0, cpu_s=1.0)
    env.reset({"question": "q"})
    result = env.step(call("python", code="print(sum(range(10)))"))
    assert result.observations[0]["content"] == "45\n" and result.info["tool_failures"] == 0


def test_load_env_resolves_builtins_and_import_paths():
    assert isinstance(load_env("calculator", {})(), CalculatorEnv)
    assert load_env("python", {"timeout_s": 1.0})().tools[0]["function"]["name"] == "python"
    assert isinstance(load_env("grpolab.envs.env:CalculatorEnv", {"max_calls_per_turn": 2})(), ToolEnv)
    env_a, env_b = (load_env("calculator", {})() for _ in range(2))
    assert env_a is not env_b  # one instance per trajectory


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("calculater", {}, "did you mean 'calculator'"),
        ("nope.module:Env", {}, "cannot import"),
        ("grpolab.envs.env:Missing", {}, "cannot import"),
        ("calculator", {"max_call_per_turn": 2}, "agent.env_params"),  # a typo fails at load time
    ],
)
def test_load_env_errors_are_config_errors(name, params, message):
    with pytest.raises(ValueError, match=message):
        load_env(name, params)
