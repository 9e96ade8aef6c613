"""The warm start: gold traces played by the teacher through the real episode loop, and SFT on them.

- the traces' ids and masks are RL's: the teacher's turns (each with its <|im_end|>) mask 1, the tool
  output and the template glue between them mask 0, written out by hand for one episode;
- the teacher's gold episode ends with the right answer (numeric reward 1);
- SFT on the traces lowers the loss, and a step changes only the trainable weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from agent_fakes import char_tokenizer

from grpolab.envs.env import load_env
from grpolab.envs.gold_turns import calculator, load_gold_turns
from grpolab.models.tiny_model import build_model, build_tokenizer
from grpolab.rewards.correctness import numeric
from grpolab.rollout.backend import SamplingParams
from grpolab.rollout.teacher import TeacherGenerator
from grpolab.rollout.types import collate
from grpolab.train.precision import native_bf16, store_frozen_linears_in_bf16
from grpolab.train.warm_start import WarmStartPlan, sft_loss, teacher_traces, train_on_traces

CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 34"}}</tool_call>'


def traces(tokenizer, rows, max_total_tokens=10_000):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return teacher_traces(
        tokenizer, load_env("calculator", {}), rows, calculator, end,
        max_turns=4, max_total_tokens=max_total_tokens, max_new_tokens=200,
    )  # fmt: skip


def test_gold_turns_call_the_calculator_then_answer_its_result():
    assert calculator({"question": "What is 12 * 34?", "answer": "408"}) == [CALL, "<answer>408</answer>"]
    assert calculator({"question": "What is 12 * 34?", "answer": "409"}) is None  # never teach a wrong answer
    assert calculator({"question": "Why?", "answer": "1"}) is None
    assert calculator({"question": "x", "expression": "2 ** 10", "answer": "1024"})[1] == "<answer>1024</answer>"
    assert load_gold_turns("calculator") is calculator
    with pytest.raises(ValueError, match=r"warm_start\.gold_turns: unknown 'calculater'"):
        load_gold_turns("calculater")


def test_trace_ids_and_mask_are_rls_and_end_with_the_right_answer():
    tokenizer = char_tokenizer()  # Qwen-style ChatML: tool results in a user turn, "\n" after <|im_end|>
    [trace] = traces(tokenizer, [{"question": "What is 12 * 34?", "answer": "408"}])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    call = [*tokenizer.encode(CALL, add_special_tokens=False), end]
    glue = tokenizer.encode(
        "\n<|im_start|>user\n<tool_response>\n408\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
        add_special_tokens=False,
    )
    answer = [*tokenizer.encode("<answer>408</answer>", add_special_tokens=False), end]
    assert trace.completion_ids == call + glue + answer
    assert trace.completion_mask == [1] * len(call) + [0] * len(glue) + [1] * len(answer)
    assert trace.info["tool_calls"] == 1 and trace.info["tool_failures"] == 0 and trace.info["turns"] == 2
    assert numeric([trace.text], ["408"]) == [1.0]


def test_traces_keep_only_finished_episodes_and_skip_unscriptable_rows():
    tokenizer = char_tokenizer()
    rows = [{"question": "What is 2 * 3?", "answer": "6"}, {"question": "Hi?", "answer": "1"}]
    assert len(traces(tokenizer, rows)) == 1
    prompt_only = len(traces(tokenizer, rows[:1])[0].prompt_ids)
    assert traces(tokenizer, rows[:1], max_total_tokens=prompt_only + 20) == []  # cut before the answer


def test_teacher_refuses_prompts_it_cannot_place():
    tokenizer = char_tokenizer()
    teacher = TeacherGenerator(tokenizer, [["a"], ["b"]], stop_id=1)
    with pytest.raises(ValueError, match="1 first prompts for 2 rows"):
        teacher.generate([[5]], SamplingParams(max_new_tokens=4))
    teacher.generate([[5], [6]], SamplingParams(max_new_tokens=4))
    with pytest.raises(ValueError, match="extends no episode"):
        teacher.generate([[7, 8]], SamplingParams(max_new_tokens=4))


def test_sft_lowers_the_loss_and_changes_only_trainable_weights():
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(tokenizer, seed=0, size="test")
    frozen_layer = model.model.layers[1]
    frozen_layer.requires_grad_(False)  # the part a LoRA run would freeze
    frozen = [p.detach().clone() for p in frozen_layer.parameters()]
    trainable = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    rows = [{"question": f"What is {a} * {b}?", "answer": str(a * b)} for a, b in [(12, 34), (56, 78), (91, 23)]]
    data = traces(tokenizer, rows)
    assert len(data) == 3
    batch = collate(data, tokenizer.pad_token_id)
    with torch.no_grad():
        before = float(sft_loss(model, batch))
    report = train_on_traces(model, data, WarmStartPlan(steps=15, lr=3e-3, batch_size=3), tokenizer.pad_token_id)
    assert report.steps == 15 and report.traces == 3 and len(report.losses) == 15
    with torch.no_grad():
        assert float(sft_loss(model, batch)) < 0.8 * before
    assert all(torch.equal(p, q) for p, q in zip(frozen_layer.parameters(), frozen))
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, trainable)
    json.dumps(report.losses)  # plain floats, for the run's log


def test_the_configs_gold_turns_names_are_the_built_ins():
    from grpolab.config.warm_start import GOLD_TURNS
    from grpolab.envs.gold_turns import BUILTIN_GOLD_TURNS

    assert set(GOLD_TURNS) == set(BUILTIN_GOLD_TURNS)


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="this CPU has no native bfloat16")
def test_sft_runs_its_forwards_in_the_precision_given_with_a_frozen_part_stored_in_bf16():
    """train.precision=bf16 with a LoRA base stored in bfloat16 (train/placement.py): the warm start's
    forwards run under the same autocast as GRPO's passes; without it a float32 input meets a
    bfloat16 weight."""
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(tokenizer, seed=0, size="test")
    model.model.layers[1].requires_grad_(False)
    assert store_frozen_linears_in_bf16(model.model.layers[1]) > 0
    data = traces(tokenizer, [{"question": "What is 12 * 34?", "answer": "408"}])
    plan = WarmStartPlan(steps=3, lr=3e-3, batch_size=1)
    with pytest.raises(RuntimeError, match="dtype"):
        train_on_traces(model, data, plan, tokenizer.pad_token_id)
    amp = torch.autocast("cpu", dtype=torch.bfloat16)
    report = train_on_traces(model, data, plan, tokenizer.pad_token_id, amp=amp)
    assert report.steps == 3 and report.losses[-1] < report.losses[0]
    assert model.model.layers[1].mlp.up_proj.weight.dtype == torch.bfloat16
