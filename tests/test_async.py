"""One-step-off rollouts (train.max_staleness=1, train/prefetch.py) on the tiny model, with a backend that
holds its own copy of the weights (as vLLM does) so that no vLLM is needed: the staleness bound, the
sampler's log-probs in the update, determinism, SIGTERM-then-resume, and the config's refusals."""

from __future__ import annotations

import copy
import signal
import threading

import pytest
import torch

import grpolab.train.build as build
import grpolab.train.trainer as trainer_module
from chaos import step_rows
from grpolab.algo.logprobs import sequence_logprobs
from grpolab.api import GRPOTrainer
from grpolab.config import vllm_install
from grpolab.config.load import ConfigError
from grpolab.parallel.distributed import DistContext
from grpolab.rollout.backend import GenerationOutput, SamplingParams
from grpolab.rollout.seeds import draw_seed
from grpolab.train.prefetch import check_one_process
from run_helpers import quick_config
from test_loop import interrupting

pytestmark = pytest.mark.slow

# no warmup: every step's update moves the weights (a first step at LR 0 would hide the staleness)
ASYNC = ["generation.backend=vllm", "train.max_staleness=1", "optim.lr=1e-2", "optim.warmup_ratio=0"]
ASYNC += ["train.max_steps=4"]


class CopyGenerator:
    """A backend with weights of its own (a deep copy of the policy): what it samples with changes only
    when `sync_weights` copies the policy in. Samples token by token from softmax(logits / T) with a
    torch.Generator seeded by `draw_seed()` (so the prefetch's own seed stream decides it)."""

    def __init__(self, model, stop_ids: list[int]) -> None:
        self.model = copy.deepcopy(model).eval()
        self.stop_ids = stop_ids
        self.version = 0  # syncs so far = optimizer steps in the weights it samples with
        self.calls: list[tuple[int, str]] = []  # (version, thread name) of every generate call

    def sync_weights(self, model) -> float:
        self.model.load_state_dict(model.state_dict())
        self.version += 1
        return 0.0

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> GenerationOutput:
        self.calls.append((self.version, threading.current_thread().name))
        rng = torch.Generator().manual_seed(draw_seed())
        out = GenerationOutput([], [], [])
        for prompt in prompts:
            for _ in range(params.num_samples):
                ids, logps = list(prompt), []
                for _ in range(params.max_new_tokens):
                    logits = self.model(torch.tensor([ids])).logits[0, -1].float()
                    logp = torch.log_softmax(logits / (1.0 if params.greedy else params.temperature), -1)
                    drawn = torch.multinomial(logp.exp(), 1, generator=rng)
                    token = int(logp.argmax()) if params.greedy else int(drawn)
                    ids.append(token)
                    logps.append(float(logp[token]))
                    if token in self.stop_ids:
                        break
                out.completions.append(ids[len(prompt) :])
                out.truncated.append(ids[-1] not in self.stop_ids)
                out.logprobs.append(logps)
        return out


@pytest.fixture(autouse=True)
def vllm_as_if_installed(monkeypatch):
    """backend=vllm passes the config's install check where vLLM is absent (test-latest's venv): no
    engine starts here, the CopyGenerator below stands in for it."""
    monkeypatch.setattr(vllm_install, "vllm_available", lambda: True)


@pytest.fixture
def engines(monkeypatch):
    """Every Trainer built in the test gets a CopyGenerator (listed here) instead of a vLLM engine."""
    built: list[CopyGenerator] = []

    def fake(cfg, model, pad_id, stop_ids, seed, rank=0, barrier=None, longest_prompt=None, engine_dtype=None):
        built.append(CopyGenerator(model, stop_ids))
        return built[-1]

    monkeypatch.setattr(build, "build_generator", fake)
    return built


def parity(completions, **_):
    """A reward with a spread in most groups (so every update moves the weights): is the completion's
    character-code sum even. Named like the built-in correctness reward evaluation reads."""
    return [float(sum(map(ord, c)) % 2 == 0) for c in completions]


parity.__name__ = "numeric"


def test_each_step_trains_on_rollouts_of_the_weights_one_step_before(tmp_path, engines, monkeypatch):
    """The bound: step s+1 trains on rollouts the weights after step s-1's update sampled, and the
    update's sampler log-probs are those recorded then (the previous weights'), not the policy's now."""
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (sampler, previous, current) [N, C]
    weights: list[dict[str, torch.Tensor]] = []
    real_update = trainer_module.policy_update

    def spy(model, optimizer, scheduler, batch, adv, cfg, *rest):
        mask = batch.completion_mask.bool()
        current = sequence_logprobs(model, batch, cfg.generation.temperature)[0].detach()
        previous = current
        if weights:  # the policy before the previous step's update: what sampled this step's rollouts
            now = copy.deepcopy(model.state_dict())
            model.load_state_dict(weights[-1])
            previous = sequence_logprobs(model, batch, cfg.generation.temperature)[0].detach()
            model.load_state_dict(now)
        weights.append(copy.deepcopy(model.state_dict()))
        seen.append((batch.sample_logp[mask], previous[mask], current[mask]))
        return real_update(model, optimizer, scheduler, batch, adv, cfg, *rest)

    monkeypatch.setattr(trainer_module, "policy_update", spy)
    run = GRPOTrainer(reward_funcs=[parity], args=quick_config(tmp_path, *ASYNC, "eval.every_steps=0")).train()
    rows = step_rows(run.run_dir)
    assert [rows[s]["async/staleness"] for s in (1, 2, 3, 4)] == [0.0, 1.0, 1.0, 1.0]
    training = [call for call in engines[0].calls if call[1].startswith("grpolab-prefetch")]
    # steps 2-4 were sampled in the background, by the engine holding 0, 1, 2 optimizer steps
    assert [version for version, _ in training] == [0, 1, 2]
    assert len(seen) == 4
    sampler, _, current = seen[0]  # step 1: sampled now, by the weights it trains
    assert torch.allclose(sampler, current, atol=1e-4)
    for sampler, previous, current in seen[1:]:
        assert torch.allclose(sampler, previous, atol=1e-4)  # the log-probs recorded at sampling
        assert (sampler - current).abs().max() > 1e-3  # ... which the policy being trained no longer gives


def test_same_seed_same_metrics_and_sync_loop_unchanged(tmp_path, engines):
    """Two one-step-off runs with one seed agree to the bit; max_staleness=0 with the same backend logs
    no async metric and trains on fresh rollouts (a different run from step 2 on)."""
    first = step_rows(GRPOTrainer(args=quick_config(tmp_path / "a", *ASYNC)).train().run_dir)
    second = step_rows(GRPOTrainer(args=quick_config(tmp_path / "b", *ASYNC)).train().run_dir)
    assert first == second
    sync = step_rows(GRPOTrainer(args=quick_config(tmp_path / "c", *ASYNC, "train.max_staleness=0")).train().run_dir)
    assert not any("async/staleness" in row for row in sync.values())
    assert sync[1]["loss"] == first[1]["loss"]  # step 1 is sampled now in both
    assert sync[2]["reward"] != first[2]["reward"] or sync[2]["loss"] != first[2]["loss"]
    # the synchronous loop samples every training step on the main thread, after the weights were synced
    assert all(name == "MainThread" for _, name in engines[2].calls)


def test_sigterm_then_resume_equals_the_uninterrupted_run(tmp_path, engines):
    # reward calls: test baseline (1), step-0 val (2), step 1 sampled now (3), prefetch of step 2 (4,
    # during step 1's update: the signal waits for the step's end), step-2 val... -> stop after step 1
    extra = [*ASYNC, "eval.every_steps=2", "train.patience=0"]

    def run(name: str, signal_at: int | None, *more: str):
        args = quick_config(tmp_path / name, *extra, *more)
        return GRPOTrainer(
            reward_funcs=[interrupting(signal_at), "answer_format"], args=args, reward_weights=[1.0, 0.2]
        )

    whole, cut = run("whole", None).train(), run("cut", 4).train()
    assert cut.status == "interrupted" and cut.steps == 1 and cut.signal == signal.SIGTERM
    assert (cut.run_dir / "checkpoints" / "step-1" / "prefetched_groups.pt").is_file()
    resumed = run("cut", None, "train.resume=auto").train()
    assert resumed.run_dir == cut.run_dir and resumed.status == "finished"
    expected, got = step_rows(whole.run_dir), step_rows(resumed.run_dir)
    assert got.keys() == expected.keys()
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-9), f"step {step} differs"
    assert got[2]["async/staleness"] == 1.0  # step 2 trained on the groups saved with step 1
    # the resumed engine sampled no step-2 groups of its own: its background calls are steps 3 and 4's,
    # with the resumed weights (synced once at the resume) and those after step 2
    assert [v for v, name in engines[2].calls if name.startswith("grpolab-prefetch")] == [1, 2]


def test_config_refuses_hf_and_more_than_one_step_and_several_processes(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.max_staleness.*generation\.backend"):
        quick_config(tmp_path, "train.max_staleness=1")
    with pytest.raises(ConfigError, match=r"train\.max_staleness"):
        quick_config(tmp_path, "generation.backend=vllm", "train.max_staleness=2")
    cfg = quick_config(tmp_path, "generation.backend=vllm", "train.max_staleness=1")
    two_ranks = DistContext(0, 2, 0, torch.device("cpu"), "gloo")  # only its world size is read
    with pytest.raises(ConfigError, match=r"train\.max_staleness=1 runs in one process only \(world size 2\)"):
        check_one_process(cfg, two_ranks)
    check_one_process(cfg, DistContext.single())  # one process: fine


def test_auto_without_vllm_falls_back_to_sampling_in_turn(tmp_path, monkeypatch):
    """A preset with backend auto and max_staleness 1 still runs where vLLM is absent: hf, staleness 0,
    said in a warning. An explicit backend=hf with max_staleness 1 stays an error (above)."""
    monkeypatch.setattr(vllm_install, "vllm_available", lambda: False)
    with pytest.warns(UserWarning, match=r"backend=auto chose hf.*train\.max_staleness=1 becomes 0"):
        cfg = quick_config(tmp_path, "generation.backend=auto", "train.max_staleness=1")
    assert (cfg.generation.backend, cfg.train.max_staleness) == ("hf", 0)
    monkeypatch.setattr(vllm_install, "vllm_available", lambda: True)
    cfg = quick_config(tmp_path, "generation.backend=auto", "train.max_staleness=1")
    assert (cfg.generation.backend, cfg.train.max_staleness) == ("vllm", 1)
