"""The token-in/token-out contract of agent rollouts, with a scripted generator and a real tokenizer.

Properties (hypothesis, random scripted conversations, two chat templates):
- masked mode: the mask-1 ids are exactly the sampled ids, in order, with their sampler log-probs;
  every other token (tool output, template glue) has mask 0;
- prompt_ids + completion_ids is what the model was fed at its last turn plus what it sampled;
- the token stream decodes to the chat template's own rendering of the conversation;
- full mode trains every token after the prompt and produces the same ids;
- turns, truncation and tool counts follow the script.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from agent_fakes import TEMPLATES, ScriptedGenerator, Turn, char_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpolab.envs.env import CalculatorEnv, load_env
from grpolab.envs.tools import parse_tool_calls
from grpolab.models.tiny_model import build_tokenizer
from grpolab.rollout.agent_metrics import agent_metrics
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.multi_turn import run_agent_rollouts, trained_spans
from grpolab.rollout.types import Rollout, collate

TOKENIZERS = {name: char_tokenizer(template) for name, template in TEMPLATES.items()}
TOKENIZERS["tiny"] = build_tokenizer()  # the embedded model's own tokenizer and template
# Templates whose generation prompt is how they render the start of an assistant turn. The tiny
# template's prompt ends "<|im_start|>assistant" but its assistant turns render "...assistant\n":
# the stream cannot equal its rendering there, while every token invariant still holds.
RENDERS_EXACTLY = {"qwen_style": True, "tool_role": True, "tiny": False}
QWEN = TOKENIZERS["qwen_style"]


def call(expression: str) -> str:
    return "<tool_call>" + json.dumps({"name": "calculator", "arguments": {"expression": expression}}) + "</tool_call>"


def run(tokenizer, scripts, rows, *, group, max_turns=4, max_new=400, cap=10_000, mode="masked", env=None):
    generator = ScriptedGenerator(tokenizer, scripts)
    rollouts = run_agent_rollouts(
        generator,
        tokenizer,
        env or load_env("calculator", {}),
        rows,
        params=SamplingParams(max_new_tokens=max_new, num_samples=group),
        max_turns=max_turns,
        max_total_tokens=cap,
        mode=mode,
    )
    return generator, rollouts


def test_worked_example_ids_masks_and_spans():
    rows = [{"question": "Q0? What is 12*34?"}]
    scripts = {(0, 0): [Turn(call("12*34")), Turn("The answer is 408.")]}
    generator, [rollout] = run(QWEN, scripts, rows, group=1)
    decode = lambda ids: QWEN.decode(ids, skip_special_tokens=False)  # noqa: E731
    s1, s2 = generator.sampled[(0, 0)]
    delta = rollout.completion_ids[len(s1) : len(rollout.completion_ids) - len(s2)]
    assert rollout.completion_ids == s1 + delta + s2
    # The glue "\n" after the sampled <|im_end|> belongs to the delta, which ends with the generation prompt.
    assert (
        decode(delta) == "\n<|im_start|>user\n<tool_response>\n408\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert rollout.completion_mask == [1] * len(s1) + [0] * len(delta) + [1] * len(s2)
    assert rollout.sample_logprobs == generator.logprobs[(0, 0)][0] + [0.0] * len(delta) + generator.logprobs[(0, 0)][1]
    assert rollout.text == "The answer is 408."
    assert [m["role"] for m in rollout.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert rollout.info["turns"] == 2 and rollout.info["tool_calls"] == 1 and rollout.info["tool_failures"] == 0
    assert rollout.info["per_tool"] == {"calculator": {"calls": 1, "failures": 0}}
    assert rollout.info["stop_reason"] == "done" and not rollout.truncated
    spans = trained_spans(rollout, QWEN)
    assert [s["trained"] for s in spans] == [False, True, False, True]
    assert spans[1]["text"] == call("12*34") + "<|im_end|>"
    assert spans[2]["text"] == decode(delta)
    assert "".join(s["text"] for s in spans) == decode(rollout.prompt_ids + rollout.completion_ids)


def test_sampled_ids_are_kept_even_when_not_the_canonical_tokenisation():
    # The fake samples "a","b" separately; the tokenizer would encode "ab" as one token. Re-tokenising
    # the decoded history would silently change the trained ids (and their log-probs).
    rows = [{"question": "Q0? spell"}]
    scripts = {(0, 0): [Turn(call("1+1") + " abab"), Turn("ab")]}
    generator, [rollout] = run(QWEN, scripts, rows, group=1)
    trained = [t for t, m in zip(rollout.completion_ids, rollout.completion_mask) if m]
    assert trained == [t for turn in generator.sampled[(0, 0)] for t in turn]
    assert QWEN.convert_tokens_to_ids("ab") not in trained


def test_model_stopping_on_another_eos_gets_the_templates_end_of_turn_as_glue():
    rows = [{"question": "Q0?"}]
    scripts = {(0, 0): [Turn(call("2+2"), stop_token="<|endoftext|>"), Turn("4")]}
    generator, [rollout] = run(QWEN, scripts, rows, group=1)
    text = QWEN.decode(rollout.completion_ids, skip_special_tokens=False)
    assert "</tool_call><|endoftext|><|im_end|>\n<|im_start|>user\n<tool_response>\n4\n" in text
    s1 = generator.sampled[(0, 0)][0]
    assert rollout.completion_mask[len(s1)] == 0  # the inserted <|im_end|> is glue, not trained


def test_one_generate_call_per_turn_and_finished_trajectories_leave_the_batch():
    rows = [{"question": f"Q{i}?"} for i in range(3)]
    scripts = {
        (i, j): [Turn(f"[{i}.{j}]" + call("1+2")) for _ in range(i + j)] + [Turn("3")]
        for i in range(3)
        for j in range(2)
    }
    generator, rollouts = run(QWEN, scripts, rows, group=2, max_turns=10)
    # Trajectory (i, j) runs i+j+1 turns, so turn t has every trajectory with i+j >= t in the batch.
    assert [len(prompts) for prompts, _ in generator.calls] == [6, 5, 3, 1]
    assert all(params.num_samples == 1 for _, params in generator.calls)
    assert [r.info["turns"] for r in rollouts] == [1, 2, 2, 3, 3, 4]
    assert [r.question_index for r in rollouts] == [0, 0, 1, 1, 2, 2]


def test_turn_cut_at_max_new_tokens_is_truncated_and_keeps_the_sampled_prefix():
    rows = [{"question": "Q0?"}]
    generator, [rollout] = run(QWEN, {(0, 0): [Turn("x" * 50)]}, rows, group=1, max_new=8)
    assert rollout.truncated and rollout.info["stop_reason"] == "max_tokens"
    assert rollout.completion_ids == generator.sampled[(0, 0)][0] and len(rollout.completion_ids) == 8
    assert rollout.completion_mask == [1] * 8 and rollout.text == "x" * 8


def test_total_cap_cuts_turns_and_never_appends_an_observation_past_it():
    rows = [{"question": "Q0?"}, {"question": "Q1?"}, {"question": "Q2? 123456789"}]
    env = CalculatorEnv()
    prompt_len = [
        len(QWEN.apply_chat_template(env.reset(row), tools=env.tools, add_generation_prompt=True, return_dict=False))
        for row in rows
    ]
    cap = prompt_len[0] + 100  # rows 0 and 1 have room for 100 tokens, row 2 for 90
    scripts = {
        (0, 0): [Turn("y" * 150)],  # cut by the generator at max_new_tokens = 100 = its budget
        (1, 0): [Turn("[1.0]" + call("5*5")), Turn("25")],  # 87 tokens fit; the ~57-token observation not
        (2, 0): [Turn("[2.0]" + "y" * 95)],  # 100 sampled in the batch, cut by the loop to its 90
    }
    generator, rollouts = run(QWEN, scripts, rows, group=1, cap=cap, max_new=200)
    assert generator.calls[0][1].max_new_tokens == 100  # the batch is sized for its roomiest trajectory
    assert [len(r.completion_ids) for r in rollouts] == [100, 87, 90]
    for rollout in rollouts:
        assert len(rollout.prompt_ids) + len(rollout.completion_ids) <= cap
        assert rollout.truncated and rollout.info["stop_reason"] == "max_total_tokens"
        assert all(rollout.completion_mask)  # only sampled tokens; no dangling observation
        assert rollout.messages[-1]["role"] == "assistant"
    assert rollouts[1].info["tool_calls"] == 1  # the call did run; its result was not appended
    assert rollouts[2].sample_logprobs == generator.logprobs[(2, 0)][0][:90]


def test_max_turns_ends_a_tool_calling_episode_as_truncated_and_metrics_count_it():
    rows = [{"question": "Q0?"}]
    scripts = {(0, 0): [Turn(call("1/0")), Turn(call("2**3") + call("nope(")), Turn(call("1"))]}
    _, [rollout] = run(QWEN, scripts, rows, group=1, max_turns=2)
    assert rollout.truncated and rollout.info["stop_reason"] == "max_turns" and rollout.info["turns"] == 2
    assert rollout.info["tool_calls"] == 3 and rollout.info["tool_failures"] == 2  # 1/0 and nope(
    metrics = agent_metrics([rollout])
    assert metrics["tools/call_frequency"] == 3.0
    assert metrics["tools/failure_frequency"] == pytest.approx(2 / 3)
    assert metrics["tools/calculator/calls"] == 3.0 and metrics["tools/calculator/failures"] == 2.0
    assert metrics["turns/mean"] == 2.0 and metrics["turns/truncated_ratio"] == 1.0
    masked = rollout.completion_mask.count(0) / len(rollout.completion_mask)
    assert metrics["tokens/masked_fraction"] == pytest.approx(masked)


def test_custom_env_by_import_path_gives_reward_and_per_turn_info():
    rows = [{"question": "Q0?"}]
    scripts = {(0, 0): [Turn("<tool_call>x</tool_call>"), Turn("done")]}
    env = load_env("agent_fakes:EchoEnv", {"replies": 2, "reward": 0.25})
    _, [rollout] = run(TOKENIZERS["tool_role"], scripts, rows, group=1, env=env)
    assert rollout.info["env_reward"] == 0.25
    assert rollout.info["steps"] == [{"step": 1, "tool_calls": 1}, {"step": 2}]
    assert [m["role"] for m in rollout.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]


def test_masked_positions_get_exactly_zero_gradient_after_collate():
    rows = [{"question": "Q0?"}, {"question": "Q1?"}]
    scripts = {
        (0, 0): [Turn("[0.0]" + call("3*3")), Turn("9")],
        (1, 0): [Turn("[1.0]" + call("1+1") + call("2+2")), Turn(call("5")), Turn("ok")],
    }
    _, rollouts = run(QWEN, scripts, rows, group=1)
    batch = collate(rollouts, pad_id=QWEN.pad_token_id)
    p = batch.prompt_length
    logits = torch.randn(*batch.input_ids.shape, len(QWEN), requires_grad=True)
    # logits at position t predict token t+1: completion token c is predicted at column p + c - 1.
    logp = torch.log_softmax(logits[:, p - 1 : -1], dim=-1).gather(-1, batch.input_ids[:, p:, None])[..., 0]
    (-(logp * batch.completion_mask).sum()).backward()
    grad = logits.grad[:, p - 1 : -1].abs().sum(-1)  # [N, C]
    assert torch.all(grad[batch.completion_mask == 0] == 0)
    assert torch.all(grad[batch.completion_mask == 1] > 0)


# ---------------------------------------------------------------- property tests
TEXT = st.text(alphabet="abc xyz019+*\n", max_size=12)
EXPRESSION = st.sampled_from(["1+2", "12*34", "7/0", "2**999", "(1", "x", "10//3"])


@st.composite
def turns(draw: Any) -> Turn:
    # sampled_from leans to its first element: most turns call a tool and end with a stop token, so
    # episodes run several turns; the rest answer, or are cut without a stop token.
    calls = draw(st.lists(EXPRESSION, min_size=draw(st.sampled_from([1, 1, 0])), max_size=2))
    text = draw(TEXT) + "".join(call(e) for e in calls) + (draw(TEXT) if calls else "")
    return Turn(text, stop=draw(st.sampled_from([True] * 9 + [False])))


@st.composite
def conversations(draw: Any) -> dict[str, Any]:
    questions, group, max_turns = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    scripts = {}
    for i in range(questions):
        for j in range(group):
            script = draw(st.lists(turns(), min_size=max_turns, max_size=max_turns))
            # A unique first turn per trajectory keeps identical histories apart (see ScriptedGenerator).
            script[0] = Turn(f"[{i}.{j}]" + script[0].text, script[0].stop)
            scripts[(i, j)] = script
    return {
        "rows": [{"question": f"Q{i}? compute"} for i in range(questions)],
        "scripts": scripts,
        "group": group,
        "max_turns": max_turns,
        "template": draw(st.sampled_from(sorted(TOKENIZERS))),
        # Prompts are 652/673 tokens (366 for tiny): 600 leaves no room, 700-1000 cut turns or observations.
        "cap": draw(st.sampled_from([10_000, 10_000, 600, 700, 800, 1000])),
    }


def expected_episode(script: list[Turn], max_turns: int) -> tuple[int, str, int]:
    """(turns, stop_reason, tool calls) without a total-length cap."""
    calls = 0
    for t, turn in enumerate(script[:max_turns], start=1):
        if not turn.stop:
            return t, "max_tokens", calls
        found = len(parse_tool_calls(turn.text))
        calls += found
        if not found:
            return t, "done", calls
        if t == max_turns:
            return t, "max_turns", calls
    raise AssertionError("unreachable: scripts have max_turns turns")


def check_masked(tokenizer, generator: ScriptedGenerator, key, rollout: Rollout, cap: int, exact: bool) -> None:
    ids, mask = rollout.completion_ids, rollout.completion_mask
    if key not in generator.sampled:  # the prompt alone filled the cap: nothing was generated
        assert ids == [] and rollout.truncated and rollout.info["turns"] == 0
        return
    # The batch's max_new_tokens suits its roomiest trajectory; the loop cuts this one's last turn to
    # its own room under the cap (only the last turn can be cut: the cut ends the episode).
    room = cap - len(generator.fed[key][-1])
    sampled = [*generator.sampled[key][:-1], generator.sampled[key][-1][:room]]
    logprobs = [*generator.logprobs[key][:-1], generator.logprobs[key][-1][:room]]
    assert rollout.messages[2]["content"].startswith(f"[{key[0]}.{key[1]}]"[: len(sampled[0])])
    # Trained ids == sampled ids, in order, with their log-probs; nothing else has mask 1.
    assert [t for t, m in zip(ids, mask) if m] == [t for turn in sampled for t in turn]
    assert rollout.sample_logprobs is not None
    assert [lp for lp, m in zip(rollout.sample_logprobs, mask) if m] == [lp for turn in logprobs for lp in turn]
    assert all(lp == 0.0 for lp, m in zip(rollout.sample_logprobs, mask) if not m)
    spans = rollout.info["sampled_spans"]
    assert [ids[a:b] for a, b in spans] == sampled
    assert sum(mask) == sum(b - a for a, b in spans)
    # Exactly what the model was fed at its last turn, followed by what it sampled then.
    assert rollout.prompt_ids + ids == generator.fed[key][-1] + sampled[-1]
    assert len(rollout.prompt_ids) + len(ids) <= cap
    # Glue after a stop token is never trained.
    stops = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    assert all(mask[p + 1] == 0 for p in range(len(ids) - 1) if ids[p] in stops)
    if not exact:
        return
    # The stream is the template's own rendering of the conversation (up to trailing glue).
    decoded = tokenizer.decode(rollout.prompt_ids + ids, skip_special_tokens=False)
    env_tools = load_env("calculator", {})().tools
    rendered = tokenizer.apply_chat_template(rollout.messages, tools=env_tools, tokenize=False)
    assert rendered.startswith(decoded)
    if ids and ids[-1] in stops:
        assert rendered[len(decoded) :].strip() == ""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_random_conversations_keep_the_token_contract(case: dict[str, Any]):
    tokenizer = TOKENIZERS[case["template"]]
    args = {"group": case["group"], "max_turns": case["max_turns"], "cap": case["cap"]}
    generator, masked = run(tokenizer, case["scripts"], case["rows"], **args)
    _, full = run(tokenizer, case["scripts"], case["rows"], mode="full", **args)
    assert len(masked) == len(case["rows"]) * case["group"]
    for index, (rollout, full_rollout) in enumerate(zip(masked, full)):
        key = (index // case["group"], index % case["group"])
        assert rollout.question_index == key[0]
        check_masked(tokenizer, generator, key, rollout, case["cap"], RENDERS_EXACTLY[case["template"]])
        # Full mode: same ids, every token after the prompt trained.
        assert full_rollout.completion_ids == rollout.completion_ids
        assert full_rollout.completion_mask == [1] * len(rollout.completion_ids)
        assert rollout.truncated == (rollout.info["stop_reason"] != "done")
        if case["cap"] == 10_000:  # no length cap in play: the script alone decides
            turns_, reason, calls = expected_episode(case["scripts"][key], case["max_turns"])
            assert (rollout.info["turns"], rollout.info["stop_reason"]) == (turns_, reason)
            assert rollout.info["tool_calls"] == calls
    sizes = [len(prompts) for prompts, _ in generator.calls]
    assert sizes == sorted(sizes, reverse=True) and all(size <= len(masked) for size in sizes)
    assert sum(sizes) == sum(r.info["turns"] for r in masked)
