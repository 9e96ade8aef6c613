"""Worker side of the multi-process tests (tests/test_distributed.py, tests/test_fsdp.py): scripted
GRPO steps and evaluations shared by the single-process reference and the workers, and the launcher.

The tests start this file once per rank (`python tests/dist_workers.py SCENARIO DIR`) with the env
vars torchrun sets; workers write their results to DIR and the test compares them.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from grpolab.config.schema import DistributedConfig
from grpolab.parallel.distributed import DistContext, global_step_totals
from grpolab.parallel.lifecycle import exit_after_distributed_run, failure_guard

HERE = Path(__file__).resolve()
ADV = [1.0, -0.5, 0.25, -0.75, 0.6, -1.2, 0.3, 0.9]  # one fixed advantage per sequence


# -- the scripted step, shared by the single-process reference and the workers ---------------------
def scripted_rollouts() -> list:
    """8 sequences of 2 groups (4 each), prompts and completions of different lengths; every 4th
    completion token is tool output (mask 0), as in agent rollouts."""
    from grpolab.rollout.types import Rollout

    rollouts = []
    for i in range(8):
        prompt = [1 + (i + k) % 30 for k in range(2 + i % 3)]
        length = 3 + (i * 5) % 6
        completion = [2 + (3 * i + k) % 29 for k in range(length)]
        mask = [0 if k % 4 == 2 else 1 for k in range(length)]
        rollouts.append(Rollout(i // 4, prompt, completion, mask, text="", truncated=False, info={"row": i}))
    return rollouts


def scripted_step(ctx: DistContext, loss_type: str, bucket_bytes: int) -> dict[str, torch.Tensor]:
    """One GRPO step with SGD(lr=1) on this rank's shard of the scripted batch; returns the weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from grpolab.algo.logprobs import sequence_logprobs
    from grpolab.algo.loss import grpo_loss
    from grpolab.rollout.types import collate

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    model = LlamaForCausalLM(config)
    ctx.sync_parameters(model)
    rollouts = ctx.shard(scripted_rollouts(), what="the scripted batch")
    adv = torch.tensor(ctx.shard(ADV, what="the scripted batch"))  # [n]
    batch = collate(rollouts, pad_id=0)
    totals = global_step_totals(ctx, len(batch), float(batch.completion_mask.sum()), max_completion_length=8)
    logp, _ = sequence_logprobs(model, batch, temperature=1.0)  # [n, C]
    # old/ref log-probs: fixed per (sequence, token) offsets, so ratios leave 1 and clipping and KL act
    rows = torch.tensor([float(r.info["row"]) for r in rollouts])[:, None]  # [n, 1]
    cols = torch.arange(logp.shape[1], dtype=torch.float32)[None, :]  # [1, C]
    old = logp.detach() + 0.3 * torch.sin(rows + 0.7 * cols)
    ref = logp.detach() - 0.1 * torch.cos(rows + cols)
    loss, _ = grpo_loss(
        logp,
        old,
        ref,
        adv,
        batch.completion_mask,
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.04,
        loss_type=loss_type,
        totals=totals,
    )
    loss.backward()
    ctx.sum_gradients(model.parameters(), bucket_bytes=bucket_bytes)
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


CASES = [("dapo", 25 * 2**20), ("grpo", 512)]  # 512 bytes: many buckets, each tensor split off

# Every objective and correction of issue 21, as config overrides: each must give the same update
# whatever the micro-batch split (tests/test_update.py) and the number of ranks (tests/test_distributed.py).
SAMPLER = {
    "generation.backend": "vllm_server",
    "grpo.importance_sampling_min": "0.5",
    "grpo.importance_sampling_cap": "2",
}
VARIANTS: dict[str, dict[str, str]] = {
    "gspo": {"grpo.loss_type": "grpo", "grpo.ratio_level": "sequence"},
    "cispo": {"grpo.loss_type": "cispo", "grpo.epsilon_high": "1.05"},
    "sapo": {"grpo.loss_type": "sapo"},
    "luspo": {"grpo.loss_type": "luspo", "grpo.ratio_level": "sequence"},
    "vespo": {"grpo.loss_type": "vespo"},
    "off_policy_mask": {"grpo.off_policy_mask_threshold": "0.0"},
    "entropy_quantile": {"grpo.entropy_top_quantile": "0.3"},
    "entropy_bonus": {"grpo.entropy_coef": "0.05"},
    # the bonus starts in the second iteration: the first measures the entropy (<= target 100)
    "entropy_adaptive": {"grpo.entropy_adaptive": "true", "grpo.entropy_coef": "0.05", "grpo.entropy_target": "100"},
    **{
        f"is_{mode}": {**SAMPLER, "grpo.importance_sampling_mode": mode}
        for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
    },
    "vespo_is": {**SAMPLER, "grpo.loss_type": "vespo", "grpo.importance_sampling_mode": "token_mask"},
}


def with_sampler_logprobs(model: Any, rollouts: list) -> list:
    """The rollouts with sampler log-probs: the model's own, moved by 0.3 sin(row + 0.7 col) on each
    sampled token, so the IS ratios leave 1 (some outside [0.5, 2]) the same way on every rank."""
    import dataclasses

    from grpolab.algo.logprobs import sequence_logprobs
    from grpolab.rollout.types import collate

    with torch.no_grad():
        logp, _ = sequence_logprobs(model, collate(rollouts, pad_id=0), temperature=1.0)  # [N, C]
    out = []
    for i, rollout in enumerate(rollouts):
        n = len(rollout.completion_ids)
        shift = [0.3 * math.sin(i + 0.7 * j) * m for j, m in enumerate(rollout.completion_mask)]
        values = [float(v) + d for v, d in zip(logp[i, :n].tolist(), shift)]
        out.append(dataclasses.replace(rollout, sample_logprobs=values))
    return out


UNEVEN = {2: [6, 2], 4: [3, 2, 2, 1]}  # sequences per rank in the FSDP scenarios (micro-batches of 2)


def trainer_step(
    ctx: DistContext, strategy: str, extra: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """`policy_update` as the trainer calls it (micro-batches of 2, beta 0.04 with a frozen reference,
    two iterations, SGD lr 1) on this rank's share of the scripted batch. With strategy=fsdp the shares
    are uneven, so the rank with fewer micro-batches must run dummy passes to stay in step.
    Returns the full weights (on rank 0; {} elsewhere under FSDP) and the step metrics."""
    from contextlib import contextmanager

    from transformers import LlamaConfig, LlamaForCausalLM

    from grpolab.compat.load import load_config
    from grpolab.parallel.sharding import Unsharded, shard_model
    from grpolab.rollout.types import collate
    from grpolab.train.update import policy_update

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    model, reference = LlamaForCausalLM(config), LlamaForCausalLM(config).eval()
    reference.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()})  # KL is not zero
    ctx.sync_parameters(model)
    rollouts, adv = scripted_rollouts(), torch.tensor(ADV)
    if extra and "generation.backend" in extra:
        rollouts = with_sampler_logprobs(model, rollouts)
    shards: Any = Unsharded(model)
    reference_shards: Any = Unsharded(reference)
    if strategy in ("fsdp", "hsdp") and ctx.enabled:
        sizes = UNEVEN[ctx.world_size]
        start = sum(sizes[: ctx.rank])
        rollouts, adv = rollouts[start : start + sizes[ctx.rank]], adv[start : start + sizes[ctx.rank]]
        mesh = ([2, 2], ["dp", "fsdp"]) if strategy == "hsdp" else None
        distributed = DistributedConfig(strategy="fsdp", mesh_shape=mesh)
        shards, reference_shards = shard_model(model, ctx, distributed), shard_model(reference, ctx, distributed)
    elif ctx.enabled:
        rollouts, adv = ctx.shard(rollouts, what="scripted"), torch.tensor(ctx.shard(ADV, what="scripted"))

    @contextmanager
    def as_reference():
        with reference_shards.gathered(), torch.no_grad():
            yield reference

    cfg = load_config(
        None,
        ["train.questions_per_step=2", "grpo.num_generations=4", "train.micro_batch_size=2", "grpo.beta=0.04",
         "grpo.num_iterations=2", "grpo.loss_type=dapo", "generation.max_new_tokens=8", "optim.max_grad_norm=100",
         *[f"{k}={v}" for k, v in (extra or {}).items()]],
        env_file=None, environ={},
    )  # fmt: skip
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    out = policy_update(model, optimizer, scheduler, collate(rollouts, pad_id=0), adv, cfg, as_reference, ctx, shards)
    weights = shards.full_state_dict()  # FSDP: the full tensors on rank 0, {} elsewhere
    if weights is None:  # not sharded: the model's own
        weights = model.state_dict()
    return {k: v.detach().clone() for k, v in weights.items()}, out.metrics


# -- worker side ----------------------------------------------------------------------------------
def worker(scenario: str, out: Path) -> None:
    torch.set_num_threads(1)
    ctx = DistContext.from_env(DistributedConfig(timeout_s=float(os.environ.get("TEST_TIMEOUT_S", "60"))))
    with failure_guard(ctx):
        if scenario == "equivalence":
            torch.save({lt: scripted_step(ctx, lt, bucket) for lt, bucket in CASES}, out / f"rank{ctx.rank}.pt")
        elif scenario == "objectives":
            results = {name: trainer_step(ctx, "ddp", extra)[0] for name, extra in VARIANTS.items()}
            torch.save(results, out / f"rank{ctx.rank}.pt")
        elif scenario == "reductions":
            write_reductions(ctx, out)
        elif scenario in ("fsdp", "hsdp"):
            weights, metrics = trainer_step(ctx, scenario)
            torch.save({"weights": weights, "metrics": metrics}, out / f"rank{ctx.rank}.pt")
        elif scenario == "evaluate":
            write_evaluation(ctx, out)
        elif scenario == "fail":
            import threading

            # A live non-daemon thread (a logger, a writer) would keep a plain `raise` from ever exiting.
            threading.Thread(target=threading.Event().wait, daemon=False).start()
            ctx.barrier()
            if ctx.rank == 1:
                raise ValueError("boom on rank 1")
            ctx.all_reduce_sum({"never": 1.0})  # rank 0 waits here for a peer that is gone
    ctx.close()
    # As `grpolab train` does: interpreter finalization after a gloo group can abort a finished rank
    # (SIGABRT, "terminate called without an active exception"; seen once in CI on the fsdp scenario).
    exit_after_distributed_run(0)


def write_reductions(ctx: DistContext, out: Path) -> None:
    r = ctx.rank
    metrics = {"loss": [1.0, 2.0][r], "tokens": [3.0, 1.0][r], "maybe": [math.nan, 4.0][r]}
    if r == 0:
        metrics["only0"] = 5.0
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    params[0].grad = torch.full((3,), float(r + 1))  # rank 0: 1, rank 1: 2 -> 3
    if r == 1:
        params[1].grad = torch.ones(3)  # only rank 1 -> 1; params[2]: nobody -> stays None
    ctx.sum_gradients(params)
    result = {
        "metrics": ctx.reduce_metrics(metrics, weight=[3.0, 1.0][r], ops={"tokens": "sum"}),
        "sum": ctx.all_reduce_sum({"a": r + 1.0}),
        "gathered": ctx.gather_objects(r * 10),
        "broadcast": ctx.broadcast_object({"from": r}),
        "shard": ctx.shard(list(range(5)), even=False),
        "grads": [p.grad.tolist() if p.grad is not None else None for p in params],
        "env": [ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend],
    }
    (out / f"rank{r}.json").write_text(json.dumps(result))


def write_evaluation(ctx: DistContext, out: Path | None = None) -> dict:
    """The scripted evaluation of tests/test_evaluate.py (5 questions, greedy + pass@k) under `ctx`;
    what this rank generated for, and the result every rank must agree on."""
    from test_evaluate import EXAMPLES, GREEDY, FakeRewards, ScriptedGenerator, run

    examples = [*EXAMPLES, EXAMPLES[0]]  # 5 questions: 3 on rank 0, 2 on rank 1
    gen = ScriptedGenerator(GREEDY, {q: ["A:2", "x"] for q in GREEDY})
    result = run(gen, FakeRewards(), pass_k=[1, 2], num_samples=2, examples=examples, ctx=ctx)
    rank = ctx.rank
    written = {"generated": [size for size, _ in gen.calls], "result": json.loads(result.to_json())}
    if out is not None:
        (out / f"rank{rank}.json").write_text(json.dumps(written))
    return written


# -- launching ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), **extra}


def spawn_ranks(
    scenario: str, out: Path, timeout: float, world: int = 2, **extra: str
) -> tuple[list[int | None], list[str], float]:
    """`world` worker processes with the env vars torchrun sets; (exit codes, stderr, seconds). An exit
    code of None means the process was still running after `timeout` (killed)."""
    env = child_env(WORLD_SIZE=str(world), **extra)
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE), scenario, str(out)],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    started = time.monotonic()
    codes: list[int | None] = []
    errors: list[str] = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(timeout - (time.monotonic() - started), 0.1))
            codes.append(proc.returncode)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            codes.append(None)
        errors.append(err)
    return codes, errors, time.monotonic() - started


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
