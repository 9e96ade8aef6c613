"""FSDP (grpolab.parallel.sharding) on several CPU processes: the same update as one process with uneven
micro-batch counts, HYBRID_SHARD on a 2-D mesh, the mesh mapping, and what Accelerate's launch
environment turns on or is refused. Workers: tests/dist_workers.py."""

from __future__ import annotations

import pytest
import torch

from dist_workers import spawn_ranks, trainer_step
from grpolab.config.schema import DistributedConfig
from grpolab.parallel.distributed import DistContext, DistributedError
from grpolab.parallel.mesh import mesh_plan


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


@pytest.mark.parametrize(
    ("mesh", "strategy", "world", "expected"),
    [
        (None, "ddp", 4, (4, 1)),
        (None, "fsdp", 4, (1, 4)),
        (([2, 2], ["dp", "fsdp"]), "fsdp", 4, (2, 2)),  # replicate over 2 groups of 2
        (([4, 1], ["fsdp", "tp"]), "fsdp", 4, (1, 4)),  # tp of 1 is just a label
    ],
)
def test_mesh_plan(mesh, strategy, world, expected):
    plan = mesh_plan(DistributedConfig(mesh_shape=mesh, strategy=strategy), world)
    assert (plan.dp, plan.fsdp) == expected


def test_tunix_mesh_with_tensor_parallel_is_rejected_with_the_equivalent():
    with pytest.raises(ValueError, match=r"tensor parallel \(tp > 1\) is not supported.*\[\[4\], \['fsdp'\]\]"):
        DistributedConfig(mesh_shape=[[2, 2], ["fsdp", "tp"]])
    assert DistributedConfig(mesh_shape=[[2, 2], ["dp", "fsdp"]]).strategy == "fsdp"  # derived from the mesh


def test_accelerate_fsdp_launch_config_is_read_from_its_env_vars():
    from grpolab.parallel.sharding import FsdpSettings, accelerate_fsdp_requested, fsdp_settings

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
    from grpolab.parallel.sharding import refuse_deepspeed

    refuse_deepspeed({})  # no DeepSpeed: nothing to say
    with pytest.raises(DistributedError, match=r"ZeRO-3 = FSDP FULL_SHARD"):
        refuse_deepspeed({"ACCELERATE_USE_DEEPSPEED": "true"})
