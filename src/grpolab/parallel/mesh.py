"""Tunix-style `distributed.mesh_shape` ([[sizes], [axes]] over dp / fsdp) mapped onto our processes."""

from __future__ import annotations

from dataclasses import dataclass

from grpolab.config.schema import DistributedConfig
from grpolab.parallel.distributed import DistributedError


@dataclass(frozen=True)
class MeshPlan:
    """How `distributed.mesh_shape` maps onto our processes: dp replicas x fsdp shards (no tp)."""

    dp: int
    fsdp: int


def mesh_plan(cfg: DistributedConfig, world_size: int) -> MeshPlan:
    if cfg.mesh_shape is None:
        return MeshPlan(dp=1, fsdp=world_size) if cfg.strategy == "fsdp" else MeshPlan(dp=world_size, fsdp=1)
    size = dict(zip(cfg.mesh_shape[1], cfg.mesh_shape[0]))
    plan = MeshPlan(dp=size.get("dp", 1), fsdp=size.get("fsdp", 1))
    if plan.dp * plan.fsdp != world_size:
        raise DistributedError(
            f"distributed.mesh_shape {cfg.mesh_shape} needs {plan.dp * plan.fsdp} processes, got {world_size}"
        )
    return plan
