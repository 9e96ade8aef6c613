"""Data parallel on two CPU processes (gloo on 127.0.0.1): the same update as one process, reductions,
and failures that end the run instead of hanging it.

Multi-process tests start this file as a worker (`python tests/test_distributed.py SCENARIO DIR`)
with the env vars a launcher sets; workers write results to DIR and the test compares them.
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

import pytest
import torch

from grpolab.config import DistributedConfig
from grpolab.distributed import DistContext, DistributedError, failure_guard, global_step_totals, mesh_plan

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
UNEVEN = {2: [6, 2], 4: [3, 2, 2, 1]}  # sequences per rank in the FSDP scenarios (micro-batches of 2)


def trainer_step(ctx: DistContext, strategy: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """`policy_update` as the trainer calls it (micro-batches of 2, beta 0.04 with a frozen reference,
    two iterations, SGD lr 1) on this rank's share of the scripted batch. With strategy=fsdp the shares
    are uneven, so the rank with fewer micro-batches must run dummy passes to stay in step.
    Returns the full weights (on rank 0; {} elsewhere under FSDP) and the step metrics."""
    from contextlib import contextmanager, nullcontext

    from transformers import LlamaConfig, LlamaForCausalLM

    from grpolab.config_load import load_config
    from grpolab.rollout.types import collate
    from grpolab.sharding import shard_model
    from grpolab.update import policy_update

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2
    )
    model, reference = LlamaForCausalLM(config), LlamaForCausalLM(config).eval()
    reference.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()})  # KL is not zero
    ctx.sync_parameters(model)
    rollouts, adv = scripted_rollouts(), torch.tensor(ADV)
    sharded = sharded_reference = None
    if strategy in ("fsdp", "hsdp") and ctx.enabled:
        sizes = UNEVEN[ctx.world_size]
        start = sum(sizes[: ctx.rank])
        rollouts, adv = rollouts[start : start + sizes[ctx.rank]], adv[start : start + sizes[ctx.rank]]
        mesh = ([2, 2], ["dp", "fsdp"]) if strategy == "hsdp" else None
        distributed = DistributedConfig(strategy="fsdp", mesh_shape=mesh)
        sharded, sharded_reference = shard_model(model, ctx, distributed), shard_model(reference, ctx, distributed)
    elif ctx.enabled:
        rollouts, adv = ctx.shard(rollouts, what="scripted"), torch.tensor(ctx.shard(ADV, what="scripted"))

    @contextmanager
    def as_reference():
        with sharded_reference.gathered() if sharded_reference else nullcontext(), torch.no_grad():
            yield reference

    cfg = load_config(
        None,
        ["train.questions_per_step=2", "grpo.num_generations=4", "train.micro_batch_size=2", "grpo.beta=0.04",
         "grpo.num_iterations=2", "grpo.loss_type=dapo", "generation.max_new_tokens=8", "optim.max_grad_norm=100"],
        env_file=None, environ={},
    )  # fmt: skip
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    out = policy_update(model, optimizer, scheduler, collate(rollouts, pad_id=0), adv, cfg, as_reference, ctx, sharded)
    weights = sharded.full_state_dict() if sharded is not None else model.state_dict()
    return {k: v.detach().clone() for k, v in weights.items()}, out.metrics


# -- worker side ----------------------------------------------------------------------------------
def worker(scenario: str, out: Path) -> None:
    torch.set_num_threads(1)
    ctx = DistContext.from_env(DistributedConfig(timeout_s=float(os.environ.get("TEST_TIMEOUT_S", "60"))))
    with failure_guard(ctx):
        if scenario == "equivalence":
            torch.save({lt: scripted_step(ctx, lt, bucket) for lt, bucket in CASES}, out / f"rank{ctx.rank}.pt")
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


def write_evaluation(ctx: DistContext | None, out: Path | None = None) -> dict:
    """The scripted evaluation of tests/test_evaluate.py (5 questions, greedy + pass@k) under `ctx`;
    what this rank generated for, and the result every rank must agree on."""
    from test_evaluate import EXAMPLES, GREEDY, FakeRewards, ScriptedGenerator, run

    examples = [*EXAMPLES, EXAMPLES[0]]  # 5 questions: 3 on rank 0, 2 on rank 1
    gen = ScriptedGenerator(GREEDY, {q: ["A:2", "x"] for q in GREEDY})
    result = run(gen, FakeRewards(), pass_k=[1, 2], num_samples=2, examples=examples, ctx=ctx)
    rank = ctx.rank if ctx is not None else 0
    written = {"generated": [size for size, _ in gen.calls], "result": json.loads(result.to_json())}
    if out is not None:
        (out / f"rank{rank}.json").write_text(json.dumps(written))
    return written


# -- test side ------------------------------------------------------------------------------------
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


def test_two_processes_update_equals_one_process(tmp_path):
    codes, errors, _ = spawn_ranks("equivalence", tmp_path, timeout=50)
    assert codes == [0, 0], errors
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM

    initial = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    ).state_dict()
    for loss_type, bucket in CASES:
        single = scripted_step(DistContext.single(), loss_type, bucket)
        moved = max(float((single[k] - initial[k]).abs().max()) for k in single)
        assert moved > 1e-3, "the step must change the weights, or equality proves nothing"
        for name, value in single.items():
            for rank in ranks:  # both ranks hold the single-process weights (and so each other's)
                torch.testing.assert_close(rank[loss_type][name], value, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("scenario", "world"), [("fsdp", 2), ("hsdp", 4)])
def test_fsdp_update_equals_one_process_with_uneven_micro_batches(tmp_path, scenario, world):
    # fsdp: FULL_SHARD over 2 ranks; hsdp: mesh [[2,2],[dp,fsdp]] = shard in pairs, replicate across them
    codes, errors, _ = spawn_ranks(scenario, tmp_path, timeout=120, world=world)
    assert codes == [0] * world, errors
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    rank0 = ranks[0]
    assert all(rank["weights"] == {} for rank in ranks[1:])  # the full state is gathered onto rank 0 only
    single_weights, single_metrics = trainer_step(DistContext.single(), "ddp")
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM

    initial = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    ).state_dict()
    assert max(float((single_weights[k] - initial[k]).abs().max()) for k in initial) > 1e-3  # the step moved
    assert set(rank0["weights"]) == set(single_weights)
    for name, value in single_weights.items():
        torch.testing.assert_close(rank0["weights"][name], value, atol=1e-5, rtol=0)
    for key in ("loss/policy", "loss/kl"):  # each rank's loss is its share of the step loss
        shares = sum(rank["metrics"][key] for rank in ranks)
        assert shares == pytest.approx(single_metrics[key], rel=1e-4, abs=1e-6), key
    for rank in ranks:  # the clipped norm is the whole gradient's, on every rank
        assert rank["metrics"]["grad_norm"] == pytest.approx(single_metrics["grad_norm"], rel=1e-4)


def test_a_failing_rank_ends_the_other_instead_of_hanging(tmp_path):
    # timeout_s 60 > the 30 s we wait: only the guard's abort, not the collective timeout, can pass this
    codes, errors, seconds = spawn_ranks("fail", tmp_path, timeout=30, TEST_TIMEOUT_S="60")
    assert None not in codes, f"a rank hung: {codes}\n{errors}"
    assert codes[0] != 0 and codes[1] != 0
    assert "ValueError: boom on rank 1" in errors[1] and "aborting the process group" in errors[1]
    assert "[rank 0/2]" in errors[0]
    assert seconds < 30


def test_reductions_under_torchrun(tmp_path):
    env = child_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    cmd += ["--master-port", env["MASTER_PORT"], str(HERE), "reductions", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, result in enumerate(results):
        assert result["env"] == [rank, 2, rank, "gloo"]
        # loss: weights 3 and 1 -> (3 * 1.0 + 1 * 2.0) / 4 = 1.25; tokens summed 3 + 1 = 4;
        # maybe: NaN on rank 0 is left out -> 4.0; only0 exists on rank 0 only -> 5.0
        assert result["metrics"] == {"loss": 1.25, "tokens": 4.0, "maybe": 4.0, "only0": 5.0}
        assert result["sum"] == {"a": 3.0}
        assert result["gathered"] == [0, 10]
        assert result["broadcast"] == {"from": 0}
        assert result["grads"] == [[3.0] * 3, [1.0] * 3, None]
    assert results[0]["shard"] + results[1]["shard"] == [0, 1, 2, 3, 4]  # 5 over 2: sizes 3 and 2
    assert results[0]["shard"] == [0, 1, 2]


def test_evaluation_is_split_across_ranks_and_gathered(tmp_path):
    codes, errors, _ = spawn_ranks("evaluate", tmp_path, timeout=50)
    assert codes == [0, 0], errors
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # batch_size 3: rank 0 generates its 3 questions in one call per pass (greedy, sampled), rank 1 its 2
    assert ranks[0]["generated"] == [3, 3] and ranks[1]["generated"] == [2, 2]
    single = write_evaluation(None)
    assert single["generated"] == [3, 2, 3, 2]  # one process: all 5 questions, in batches of 3
    for rank in ranks:  # every rank reports the single-process result: metrics, records, question order
        assert rank["result"] == single["result"]
    assert single["result"]["num_questions"] == 5


def test_init_failure_is_fast_and_says_what_to_check(tmp_path):
    # Rank 0 of 2 with no rank 1: rendezvous cannot complete, and must say so within the timeout.
    env = child_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    code = (
        "from grpolab.config import DistributedConfig\n"
        "from grpolab.distributed import DistContext, DistributedError\n"
        "try:\n    DistContext.from_env(DistributedConfig(timeout_s=2))\n"
        "except DistributedError as e:\n    print(e); raise SystemExit(3)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=40)
    assert done.returncode == 3, done.stderr[-2000:]
    assert time.monotonic() - started < 30
    message = done.stdout.strip()
    assert len(message.splitlines()) == 1
    assert "(gloo)" in message and f"127.0.0.1:{env['MASTER_PORT']}" in message
    assert "rank 0 of 2" in message and "distributed.timeout_s" in message


def test_env_errors_before_any_network(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(DistributedError, match=r"MASTER_ADDR, MASTER_PORT not set.*torchrun --nproc-per-node 2"):
        DistContext.from_env(DistributedConfig())
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(DistributedError, match=r"mesh_shape .* covers 4 devices but 2 processes"):
        DistContext.from_env(DistributedConfig(mesh_shape=([2, 2], ["dp", "fsdp"])))
    if not torch.cuda.is_available():
        with pytest.raises(DistributedError, match="nccl needs CUDA"):
            DistContext.from_env(DistributedConfig(backend="nccl"))


def test_shard_splits_contiguously_and_names_the_knob():
    ranks = [DistContext(r, 4, r, torch.device("cpu"), "gloo") for r in range(4)]
    items = list(range(8))
    assert [ctx.shard(items) for ctx in ranks] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(DistributedError) as err:
        ranks[0].shard(list(range(6)))
    # 6 questions over 4 processes: 4 or 8 would work
    assert str(err.value).startswith("train.questions_per_step (6) must be divisible by the number of processes (4)")
    assert "values that work: 4, 8" in str(err.value)
    with pytest.raises(DistributedError, match=r"values that work: 4 \("):
        ranks[0].shard([1, 2, 3])  # 3 < 4: only 4 (0 is not a batch size)


def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = DistContext.from_env(DistributedConfig(), device_name="cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main, ctx.backend) == (0, 1, False, True, "none")
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    ctx.sum_gradients([p])
    assert p.grad.tolist() == [3.0, 3.0]
    assert ctx.reduce_metrics({"loss": 2.0}, weight=5) == {"loss": 2.0}
    assert ctx.shard([1, 2, 3]) == [1, 2, 3] and ctx.gather_objects("x") == ["x"]
    assert global_step_totals(ctx, 8, 40.0, 16).num_tokens == 40.0
    with pytest.raises(ValueError, match="plain"), failure_guard(ctx):  # one process: errors propagate as usual
        raise ValueError("plain")
    ctx.barrier()
    ctx.close()


@pytest.mark.parametrize(
    ("mesh", "strategy", "world", "expected"),
    [
        (None, "ddp", 4, (4, 1, "NO_SHARD")),
        (None, "fsdp", 4, (1, 4, "FULL_SHARD")),
        (([2, 2], ["dp", "fsdp"]), "fsdp", 4, (2, 2, "HYBRID_SHARD")),  # replicate over 2 groups of 2
        (([4, 1], ["fsdp", "tp"]), "fsdp", 4, (1, 4, "FULL_SHARD")),  # tp of 1 is just a label
    ],
)
def test_mesh_plan(mesh, strategy, world, expected):
    plan = mesh_plan(DistributedConfig(mesh_shape=mesh, strategy=strategy), world)
    assert (plan.dp, plan.fsdp, plan.fsdp_sharding_strategy) == expected


def test_tunix_mesh_with_tensor_parallel_is_rejected_with_the_equivalent():
    with pytest.raises(ValueError, match=r"tensor parallel \(tp > 1\) is not supported.*\[\[4\], \['fsdp'\]\]"):
        DistributedConfig(mesh_shape=[[2, 2], ["fsdp", "tp"]])
    assert DistributedConfig(mesh_shape=[[2, 2], ["dp", "fsdp"]]).strategy == "fsdp"  # derived from the mesh


def test_accelerate_fsdp_launch_config_is_read_from_its_env_vars():
    from grpolab.sharding import FsdpSettings, accelerate_fsdp_requested, fsdp_settings

    assert not accelerate_fsdp_requested({}) and fsdp_settings({}) == FsdpSettings()
    launched = {
        "ACCELERATE_USE_FSDP": "true",
        "FSDP_VERSION": "2",
        "FSDP_RESHARD_AFTER_FORWARD": "false",
        "FSDP_TRANSFORMER_CLS_TO_WRAP": "Qwen2DecoderLayer, MyLayer",
    }
    assert accelerate_fsdp_requested(launched)
    assert fsdp_settings(launched) == FsdpSettings(False, ("Qwen2DecoderLayer", "MyLayer"))
    with pytest.raises(DistributedError, match="set `fsdp_version: 2`"):
        fsdp_settings({**launched, "FSDP_VERSION": "1"})
    with pytest.raises(DistributedError, match="fsdp_offload_params"):
        fsdp_settings({**launched, "FSDP_OFFLOAD_PARAMS": "true"})


def test_a_deepspeed_launch_is_refused_not_silently_unsharded():
    from grpolab.sharding import refuse_deepspeed

    refuse_deepspeed({})  # no DeepSpeed: nothing to say
    with pytest.raises(DistributedError, match=r"ZeRO-3 = FSDP FULL_SHARD"):
        refuse_deepspeed({"ACCELERATE_USE_DEEPSPEED": "true"})


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
