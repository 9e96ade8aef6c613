"""Data parallel on two CPU processes (gloo on 127.0.0.1): the same update as one process, reductions,
split evaluation, and failures that end the run instead of hanging it. The workers are in
tests/dist_workers.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from dist_workers import CASES, HERE, VARIANTS, child_env, scripted_step, spawn_ranks, trainer_step, write_evaluation
from grpolab.config.schema import DistributedConfig
from grpolab.parallel.distributed import DistContext, DistributedError, global_step_totals
from grpolab.parallel.lifecycle import exit_after_distributed_run, failure_guard


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


def test_every_objective_variant_gives_the_same_update_on_two_processes(tmp_path):
    # policy_update with each variant of issue 21 (sequence ratios, sampler IS modes, off-policy mask,
    # the whole-step entropy quantile and bonus): 2 ranks of 4 sequences = 1 process of 8
    codes, errors, _ = spawn_ranks("objectives", tmp_path, timeout=120)
    assert codes == [0, 0], errors
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, extra in VARIANTS.items():
        single, _ = trainer_step(DistContext.single(), "ddp", extra)
        for key, value in single.items():
            for rank in ranks:
                torch.testing.assert_close(rank[name][key], value, atol=1e-6, rtol=1e-5, msg=f"{name}: {key}")


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
    single = write_evaluation(DistContext.single())
    assert single["generated"] == [3, 2, 3, 2]  # one process: all 5 questions, in batches of 3
    for rank in ranks:  # every rank reports the single-process result: metrics, records, question order
        assert rank["result"] == single["result"]
    assert single["result"]["num_questions"] == 5


def test_init_failure_is_fast_and_says_what_to_check(tmp_path):
    # Rank 0 of 2 with no rank 1: rendezvous cannot complete, and must say so within the timeout.
    env = child_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    code = (
        "from grpolab.config.schema import DistributedConfig\n"
        "from grpolab.parallel.distributed import DistContext, DistributedError\n"
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
    exit_after_distributed_run(0)  # this process started no group: returns (else pytest would end here)
