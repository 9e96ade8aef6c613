"""Data-parallel GRPO on torch.distributed: one process per device, started by torchrun or accelerate.

Both launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `DistContext.from_env`
reads them. Without WORLD_SIZE (or with 1) the run is one process and every method is a cheap no-op,
so the trainer calls them unconditionally. How a step is split, and why it is exact:

- Every rank draws the same B question indices (same seed), keeps its contiguous B/W of them
  (`shard`) and samples all G completions of each: a group never straddles ranks, so group
  advantages need no communication (scale_rewards="batch" does: gather the rewards first).
- Gradients are SUMMED over ranks, not averaged (DDP's default). The loss normalisers use
  whole-step totals (`global_step_totals`: all-reduced sequence and mask-token counts, see
  algo.loss.StepTotals), so each rank's loss is already its share of the single-process step loss
  and the sum of the per-rank gradients is exactly the single-process gradient (tested, atol 1e-6).
  Averaging would shrink every update by W. bnpo is local by definition: its normaliser divides by
  the micro-batch count summed over ranks.
- After `sum_gradients` every rank holds the same gradient, so clipping, the non-finite check and
  the optimizer step agree on every rank without further communication; weights stay identical.
- Metrics are reduced to weighted means (`reduce_metrics`) and logged by rank 0 only.

How a rank fails, and how a finished process exits, is in parallel/lifecycle.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist

from grpolab.algo.loss import StepTotals
from grpolab.config.schema import DistributedConfig
from grpolab.parallel.lifecycle import exit_after_distributed_run, first_line, mark_group_started, run_guarded

T = TypeVar("T")
ReduceOp = Literal["mean", "sum", "min", "max"]
BUCKET_BYTES = 25 * 2**20  # DDP's default bucket: large enough to amortise latency, small enough to stay cheap


class DistributedError(RuntimeError):
    """Distributed start-up or batch splitting failed; the message says what to check."""


def _pick_device(name: str, local_rank: int, multi: bool) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and multi:
        return torch.device("cuda", local_rank)  # one device per process on this node
    return torch.device(name)


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str  # gloo | nccl, or "none" for a single process
    timeout_s: float = 1800.0
    _owns_group: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def _comm_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo is happiest with CPU ones.
        return self.device if self.backend == "nccl" else torch.device("cpu")

    @classmethod
    def single(cls, device: torch.device | None = None) -> DistContext:
        return cls(0, 1, 0, device or torch.device("cpu"), "none")

    @classmethod
    def from_env(cls, cfg: DistributedConfig, device_name: str = "auto") -> DistContext:
        env = os.environ
        world = int(env.get("WORLD_SIZE") or 1)
        rank = int(env.get("RANK") or 0)
        local_rank = int(env.get("LOCAL_RANK") or rank)
        if world <= 1:
            return cls.single(_pick_device(device_name, 0, multi=False))
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise DistributedError(
                f"WORLD_SIZE={world} but {', '.join(missing)} not set: start the run with "
                f"`torchrun --nproc-per-node {world} -m grpolab train ...` or `accelerate launch`, which set them"
            )
        if not 0 <= rank < world:
            raise DistributedError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
        if cfg.mesh_shape is not None and math.prod(cfg.mesh_shape[0]) != world:
            raise DistributedError(
                f"distributed.mesh_shape {cfg.mesh_shape} covers {math.prod(cfg.mesh_shape[0])} devices "
                f"but {world} processes were launched"
            )
        device = _pick_device(device_name, local_rank, multi=True)
        backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        if backend == "nccl" and device.type != "cuda":
            raise DistributedError(f"distributed.backend=nccl needs CUDA devices, but this rank runs on {device}")
        if dist.is_initialized():  # Accelerate (or a test) already started the group: reuse it
            return cls(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend(), cfg.timeout_s)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        where = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
        try:
            dist.init_process_group(
                backend,
                rank=rank,
                world_size=world,
                timeout=timedelta(seconds=cfg.timeout_s),
                device_id=device if backend == "nccl" else None,  # NCCL: fail here, not at the first collective
            )
        except Exception as err:
            raise DistributedError(
                f"torch.distributed ({backend}) could not start rank {rank} of {world} at {where}: "
                f"{first_line(err)}. Check that all {world} processes were launched with the same "
                f"MASTER_ADDR/MASTER_PORT, that rank 0 runs on {env['MASTER_ADDR']} and its port is reachable "
                f"(firewall, port in use), and raise distributed.timeout_s ({cfg.timeout_s:g}) if ranks start slowly"
            ) from err
        mark_group_started()
        return cls(rank, world, local_rank, device, backend, cfg.timeout_s, _owns_group=True)

    # -- splitting work ----------------------------------------------------------------------
    def shard(self, items: list[T], *, even: bool = True, what: str = "train.questions_per_step") -> list[T]:
        """This rank's contiguous slice; concatenating every rank's slice in rank order gives `items`.

        even=True (training): every rank gets len/W items, or DistributedError naming `what`.
        even=False (evaluation): the first len % W ranks get one extra item.
        """
        n, w = len(items), self.world_size
        if w == 1:
            return list(items)
        if n % w and even:
            lower, upper = (n // w) * w, (n // w + 1) * w
            works = ", ".join(str(v) for v in (lower, upper) if v > 0)
            raise DistributedError(
                f"{what} ({n}) must be divisible by the number of processes ({w}) so every rank trains on the "
                f"same number of whole groups; values that work: {works} (any multiple of {w})"
            )
        base, extra = divmod(n, w)
        start = self.rank * base + min(self.rank, extra)
        return list(items[start : start + base + (1 if self.rank < extra else 0)])

    # -- reductions --------------------------------------------------------------------------
    def all_reduce_sum(self, values: dict[str, float]) -> dict[str, float]:
        """Sum of each value over ranks (float64, so counts stay exact). Every rank passes the same keys."""
        return self._all_reduce(values, dist.ReduceOp.SUM)

    def all_reduce_max(self, values: dict[str, float]) -> dict[str, float]:
        """Largest value of each key over ranks. Every rank passes the same keys."""
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def _all_reduce(self, values: dict[str, float], op: Any) -> dict[str, float]:
        if not self.enabled:
            return dict(values)
        keys = sorted(values)
        packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(packed, op=op)
        return dict(zip(keys, packed.tolist()))

    def reduce_metrics(
        self, metrics: dict[str, float], weight: float, ops: Mapping[str, ReduceOp] | None = None
    ) -> dict[str, float]:
        """Weighted mean over ranks: sum_r w_r * m_r / sum_r w_r, over the ranks that have the key.

        weight is this rank's share (tokens or sequences). A key some rank lacks, or holds as NaN,
        is averaged over the others only; ops overrides the reduction per key ("sum" for counts,
        "min"/"max" for extremes). Example: rank 0 {loss: 1.0} w=3, rank 1 {loss: 2.0} w=1 -> 1.25.
        """
        if not self.enabled:
            return dict(metrics)
        ops = ops or {}
        gathered: list[tuple[dict[str, float], float]] = self.gather_objects((dict(metrics), float(weight)))
        keys = sorted({k for values, _ in gathered for k in values})
        out: dict[str, float] = {}
        for key in keys:
            pairs = [(float(v[key]), w) for v, w in gathered if key in v and not math.isnan(float(v[key]))]
            op = ops.get(key, "mean")
            if not pairs:
                out[key] = math.nan
            elif op == "sum":
                out[key] = sum(x for x, _ in pairs)
            elif op in ("min", "max"):
                out[key] = (min if op == "min" else max)(x for x, _ in pairs)
            else:
                total = sum(w for _, w in pairs)
                # all weights 0 (e.g. no trained tokens anywhere): a plain mean is the only sensible value
                out[key] = sum(x * w for x, w in pairs) / total if total > 0 else sum(x for x, _ in pairs) / len(pairs)
        return out

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order, on every rank (pickled: for small things only)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.enabled:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def sum_gradients(self, params: Iterable[torch.nn.Parameter], bucket_bytes: int = BUCKET_BYTES) -> None:
        """All-reduce SUM of .grad in place, in flat buckets (one collective per ~25 MB, not per tensor).

        A parameter without a gradient on this rank counts as zeros; one that has no gradient on any
        rank keeps grad None, exactly as in a single process (AdamW then skips it).
        """
        if not self.enabled:
            return
        params = list(params)
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self._comm_device)
        dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
        live = [p for p, flag in zip(params, has_grad.tolist()) if flag]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            elif p.grad.is_sparse:
                raise DistributedError("sum_gradients does not handle sparse gradients")
        for bucket in _buckets(live, bucket_bytes):
            flat = torch.cat([p.grad.reshape(-1) for p in bucket if p.grad is not None])  # [sum numel]
            reduced = flat.to(self._comm_device)
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
            offset = 0
            for p in bucket:
                assert p.grad is not None
                n = p.grad.numel()
                p.grad.copy_(reduced[offset : offset + n].view_as(p.grad))
                offset += n

    def sync_parameters(self, module: torch.nn.Module, src: int = 0) -> None:
        """Copy rank `src`'s parameters and buffers to every rank (start from identical weights even if
        an initialiser drew different random numbers, e.g. a LoRA adapter's A matrices)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                moved = tensor.data.to(self._comm_device)
                dist.broadcast(moved, src=src)
                tensor.data.copy_(moved)

    def barrier(self) -> None:
        if not self.enabled:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def abort(self) -> None:
        """Best effort: tear the group down without waiting for peers (used when this rank fails)."""
        if not dist.is_initialized():
            return
        # private, but the only call that does not block on in-flight NCCL work
        abort = getattr(dist.distributed_c10d, "_abort_process_group", dist.destroy_process_group)
        with suppress(Exception):  # we are already failing: the original error is what matters
            abort()

    def close(self) -> None:
        """Leave the group after a run that succeeded on every rank: a barrier first, so that no rank
        tears its connections down while a peer still has a collective in flight."""
        if self._owns_group and dist.is_initialized():
            self.barrier()
            dist.destroy_process_group()
        self._owns_group = False


def _buckets(params: list[torch.nn.Parameter], cap: int) -> Iterator[list[torch.nn.Parameter]]:
    """Consecutive runs of parameters with the same device and dtype, each at most `cap` bytes
    (a single larger tensor gets its own bucket)."""
    bucket: list[torch.nn.Parameter] = []
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        if bucket and (size + nbytes > cap or (p.device, p.dtype) != (bucket[0].device, bucket[0].dtype)):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += nbytes
    if bucket:
        yield bucket


def global_step_totals(
    ctx: DistContext,
    local_num_sequences: int,
    local_num_tokens: float,
    max_completion_length: int,
    local_num_micro_batches: int = 1,
) -> StepTotals:
    """The whole step's StepTotals from each rank's counts (max_completion_length is a config value,
    the same everywhere). With these, per-rank losses add up to the single-process loss."""
    total = ctx.all_reduce_sum(
        {
            "sequences": float(local_num_sequences),
            "tokens": float(local_num_tokens),
            "micro_batches": float(local_num_micro_batches),
        }
    )
    return StepTotals(
        num_sequences=round(total["sequences"]),
        num_tokens=total["tokens"],
        max_completion_length=max_completion_length,
        num_micro_batches=max(1, round(total["micro_batches"])),
    )


def main() -> int:
    """`torchrun --nproc-per-node 2 -m grpolab.parallel.distributed`: check that the launcher, the backend and
    the network work before starting a long run."""
    ctx = DistContext.from_env(DistributedConfig(timeout_s=60))

    def check() -> int:
        total = ctx.all_reduce_sum({"one": 1.0})["one"]
        where = ctx.gather_objects(f"rank {ctx.rank} on {os.uname().nodename}:{ctx.device}")
        if ctx.is_main:
            print(
                f"grpolab.parallel.distributed: backend={ctx.backend} world_size={ctx.world_size}; " + ", ".join(where)
            )
        if total != ctx.world_size:
            raise DistributedError(f"all_reduce gave {total}, expected {ctx.world_size}")
        ctx.close()
        return 0

    return run_guarded(ctx, check)


if __name__ == "__main__":
    exit_after_distributed_run(status := main())
    raise SystemExit(status)
