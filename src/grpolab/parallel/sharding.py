"""FSDP: parameters, gradients and optimizer state sharded over the processes (torch FSDP2).

`distributed.strategy=fsdp` (or an `fsdp` axis in `distributed.mesh_shape`, or `accelerate launch`
with an FSDP config) shards the model with `torch.distributed.fsdp.fully_shard`, the function
Accelerate's FSDP2 plugin calls: every decoder layer is one shard unit, the root holds the rest
(embeddings, final norm, head). What the trainer does differently under FSDP, and why:

- Generation, evaluation and no-grad log-prob passes run inside `ShardedModel.gathered()`: every
  rank all-gathers the whole model once, generates with no collective at all, and reshards after.
  Ranks generate different numbers of tokens and turns (agent episodes, uneven evaluation shards),
  so per-layer gathering during generation would deadlock or need lockstep generation.
- Training forward/backward passes stay sharded (a layer is gathered just before it runs). Every rank
  must run the same number of them, so a rank with fewer micro-batches runs zero-weighted dummy
  passes (`update.policy_update`).
- FSDP averages gradients over the ranks; our per-rank losses are shares of the whole-step loss
  that must be summed (see distributed.py), so the backward pass uses loss x world size.
- Checkpoints hold full (unsharded) tensors in the single-process format: every rank takes part in
  gathering them, rank 0 writes. They load at any world size, with or without FSDP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from grpolab.config.schema import DistributedConfig
from grpolab.parallel.distributed import DistContext, DistributedError
from grpolab.parallel.mesh import mesh_plan


@dataclass(frozen=True)
class FsdpSettings:
    """The FSDP switches a run uses: from `distributed.*`, or from Accelerate's FSDP launch config."""

    reshard_after_forward: bool = True  # FULL_SHARD; False = SHARD_GRAD_OP (keep layers gathered until backward)
    layer_classes: tuple[str, ...] = ()  # shard units; empty = the model's `_no_split_modules`


def accelerate_fsdp_requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when the process was started by `accelerate launch` with an FSDP config."""
    env = os.environ if environ is None else environ
    return env.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def refuse_deepspeed(environ: Mapping[str, str] | None = None) -> None:
    """`accelerate launch` with a DeepSpeed config: stop, instead of training unsharded while the user
    believes ZeRO is on (grpolab reduces gradients itself and never builds a DeepSpeed engine)."""
    env = os.environ if environ is None else environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise DistributedError(
            "accelerate launch with a DeepSpeed config: grpolab does not run on DeepSpeed's engine, so ZeRO "
            "would not be applied. Use FSDP instead (ZeRO-3 = FSDP FULL_SHARD, ZeRO-2 = SHARD_GRAD_OP): "
            "distributed.strategy=fsdp or an Accelerate FSDP config, see docs/distributed.md"
        )


def fsdp_settings(environ: Mapping[str, str] | None = None) -> FsdpSettings:
    """Accelerate's FSDP env vars (set by `accelerate launch --config_file fsdp.yaml`), where present.

    Only FSDP version 2 is accepted (version 1's flat parameters are a different engine); CPU offload
    is refused rather than ignored."""
    env = os.environ if environ is None else environ
    if not accelerate_fsdp_requested(env):
        return FsdpSettings()
    if env.get("FSDP_VERSION", "1") != "2":
        raise DistributedError(
            f"accelerate FSDP config has fsdp_version {env.get('FSDP_VERSION', '1')}; grpolab shards with "
            "FSDP2: set `fsdp_version: 2` in the Accelerate config"
        )
    if env.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise DistributedError("accelerate FSDP config sets fsdp_offload_params: true, which grpolab does not support")
    reshard = env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() not in ("false", "shard_grad_op")
    layers = tuple(c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    return FsdpSettings(reshard_after_forward=reshard, layer_classes=layers)


def unsharded_class(module: Any) -> Any:
    """The module's own class: fully_shard swaps it for a dynamic subclass of (FSDPModule, the class)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def _no_split_modules(model: Any) -> set[str]:
    for module in model.modules():  # a PeftModel wraps the transformers model: look inside
        names = getattr(module, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


class ShardedModel:
    """A model after `fully_shard`, with the switches the trainer needs around it."""

    def __init__(self, model: Any, units: list[Any], reshard_layers: bool, world_size: int) -> None:
        self.model = model
        self.units = units  # every FSDPModule, the root FIRST: the first unshard initialises FSDP from the root
        self.reshard_layers = reshard_layers  # the layers' reshard_after_forward outside `gathered` (root: False)
        self.world_size = world_size

    def describe(self, strategy: str) -> str | None:
        """The line a run logs about its sharding."""
        layers = {unsharded_class(unit).__name__ for unit in self.units[1:]}
        shard = "FULL_SHARD" if self.reshard_layers else "SHARD_GRAD_OP"
        units = f"{len(self.units)} shard units (root + {len(self.units) - 1} x {', '.join(sorted(layers))}), {shard}"
        return f"FSDP: {units} over {self.world_size} ranks"

    @property
    def loss_scale(self) -> float:
        """FSDP averages gradients over every rank (shard and replicate groups); x W turns that into a sum."""
        return float(self.world_size)

    # a forward is a collective here (it gathers every layer): a rank may not run one on its own
    forwards_alone = False

    def training_passes(self, ctx: DistContext, local_passes: int) -> int:
        """Every rank runs as many training passes as the rank with the most micro-batches (each pass
        gathers and reduce-scatters every layer: a rank that stopped early would hang the others)."""
        return int(ctx.all_reduce_max({"passes": float(local_passes)})["passes"])

    def reduce_gradients(self, ctx: DistContext, params: list[torch.nn.Parameter]) -> None:
        """Nothing to do: FSDP's backward already reduce-scattered the gradients."""

    @contextmanager
    def gathered(self) -> Iterator[Any]:
        """The whole model unsharded on every rank: forward passes inside run with no collective.

        Entering and leaving are collectives (all ranks, same order); what happens inside need not be."""
        for unit in self.units:
            unit.set_reshard_after_forward(False, recurse=False)
        for unit in self.units:
            unit.unshard()
        try:
            yield self.model
        finally:
            for unit in self.units:
                unit.reshard()
            for index, unit in enumerate(self.units):
                unit.set_reshard_after_forward(index > 0 and self.reshard_layers, recurse=False)

    # -- full state, for checkpoints ---------------------------------------------------------
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every rank must call; rank 0 gets the full tensors on CPU, the others an empty dict."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full: Any = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        # a tied weight (lm_head = embeddings) appears under both names; save it once, as
        # save_pretrained does for an unsharded model
        names = {name for name, _ in self.model.named_parameters()}
        aliases = {name for name, _ in self.model.named_parameters(remove_duplicate=False)} - names
        return {key: value for key, value in full.items() if key not in aliases}

    def load_full_state_dict(self, state: dict[str, torch.Tensor], strict: bool) -> None:
        """Every rank passes the same full tensors (keys as in model.state_dict()); each keeps its shard."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        tensors: Any = state
        set_model_state_dict(self.model, tensors, options=StateDictOptions(full_state_dict=True, strict=strict))

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Rank 0: the optimizer state as `optimizer.state_dict()` of one unsharded process would give it
        (integer parameter ids in `param_groups` order), so checkpoints do not depend on the strategy."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full: Any = get_optimizer_state_dict(
            self.model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if not full:
            return {}
        index = {name: i for i, name in enumerate(self._optimizer_param_names(optimizer))}
        groups = [{**group, "params": [index[name] for name in group["params"]]} for group in full["param_groups"]]
        return {"state": {index[name]: value for name, value in full["state"].items()}, "param_groups": groups}

    def load_full_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = self._optimizer_param_names(optimizer)
        by_name: Any = {
            "state": {names[int(i)]: value for i, value in state["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]],
        }
        set_optimizer_state_dict(self.model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))

    def _optimizer_param_names(self, optimizer: torch.optim.Optimizer) -> list[str]:
        name_of = {id(p): name for name, p in self.model.named_parameters()}
        return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


class Unsharded:
    """A model that is not sharded, behind the same interface as `ShardedModel`, so the trainer, the
    update and the checkpoints never ask "is it sharded?": gathering is a no-op, the loss scale is 1,
    gradients are summed over ranks by us (DDP-style), and full states are the model's own."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def describe(self, strategy: str) -> str | None:
        """A line only when FSDP was asked for and there is nothing to shard (one process)."""
        if strategy == "fsdp":
            return "distributed.strategy=fsdp with one process: nothing to shard, training unsharded"
        return None

    loss_scale = 1.0
    forwards_alone = True  # a forward involves no other rank

    @contextmanager
    def gathered(self) -> Iterator[Any]:
        yield self.model

    def training_passes(self, ctx: DistContext, local_passes: int) -> int:
        return local_passes  # no collective inside a forward: each rank runs its own micro-batches

    def reduce_gradients(self, ctx: DistContext, params: list[torch.nn.Parameter]) -> None:
        ctx.sum_gradients(params)  # a no-op in one process

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        return None  # save_pretrained(state_dict=None) writes the model's own weights

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        return None  # the optimizer's own state_dict()

    def load_full_state_dict(self, state: dict[str, torch.Tensor], strict: bool) -> None:
        self.model.load_state_dict(state, strict=strict)

    def load_full_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)


Shards = ShardedModel | Unsharded


def shard_model(
    model: Any, ctx: DistContext, cfg: DistributedConfig, settings: FsdpSettings | None = None
) -> ShardedModel:
    """Apply `fully_shard` to every decoder layer, then to the root. Call after the weights are the
    same on every rank and before the optimizer is built (its parameters become DTensors)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    settings = settings or FsdpSettings()
    plan = mesh_plan(cfg, ctx.world_size)
    device_type = ctx.device.type
    if plan.dp > 1:  # HYBRID_SHARD: shard inside each group of `fsdp` ranks, replicate across the dp groups
        mesh = init_device_mesh(device_type, (plan.dp, plan.fsdp), mesh_dim_names=("dp", "fsdp"))
    else:
        mesh = init_device_mesh(device_type, (ctx.world_size,), mesh_dim_names=("fsdp",))
    layer_names = set(settings.layer_classes) or _no_split_modules(model)
    if not layer_names:
        raise DistributedError(
            f"distributed.strategy=fsdp: cannot tell the decoder layers of {type(model).__name__} (no "
            "_no_split_modules); set fsdp_transformer_layer_cls_to_wrap in the Accelerate config"
        )
    layers = [m for m in model.modules() if type(m).__name__ in layer_names]
    if not layers:
        raise DistributedError(f"distributed.strategy=fsdp: no module of class {sorted(layer_names)} in the model")
    units = []
    for layer in layers:
        units.append(fully_shard(layer, mesh=mesh, reshard_after_forward=settings.reshard_after_forward))
    # the root's own parameters (embeddings, head) stay gathered after forward: backward needs them next
    units.insert(0, fully_shard(model, mesh=mesh, reshard_after_forward=False))
    # FSDP picks its root as the first module to run forward. A PeftModel's generate() calls the inner
    # model, which would make a layer the root and break the next forward through the PeftModel, so
    # run one token through the real root now (all ranks, same shapes)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=ctx.device))
    for unit in units:  # leave every parameter sharded: the optimizer must be built on the DTensor shards
        unit.reshard()
    return ShardedModel(model, units, settings.reshard_after_forward, ctx.world_size)
