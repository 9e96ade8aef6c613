"""One place builds what a run works with: the policy (and its reference) loaded and placed, the
generation backend and the rollout sampler over it, next to the splits and reward sets it was given.
Training (`Trainer`, so also `GRPOTrainer.evaluate`) and `grpolab eval` both build through here, so
an evaluation outside training samples exactly as the run's own evaluation does."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpolab.config.schema import Config
from grpolab.data.base import Example, Splits
from grpolab.models.loading import LoadedModel
from grpolab.parallel.distributed import DistContext
from grpolab.parallel.sharding import Shards
from grpolab.rewards import RewardSet
from grpolab.rollout.backend import Generator
from grpolab.rollout.generators import build_generator
from grpolab.rollout.sampler import RolloutSampler
from grpolab.train.inputs import RunInputs
from grpolab.train.placement import load_and_place
from grpolab.train.precision import engine_dtype
from grpolab.train.preflight import prompt_lengths, report_long_prompts


@dataclass
class RunParts:
    """A run's collaborators, built once."""

    splits: Splits
    rewards: RewardSet  # what training optimises
    eval_rewards: RewardSet  # the training rewards plus what evaluation reads (weight 0)
    loaded: LoadedModel  # the policy, its tokenizer and (beta > 0) its reference
    shards: Shards  # the policy's sharding (Unsharded outside FSDP)
    reference_shards: Shards  # the reference's (the policy's own under LoRA)
    generator: Generator
    rollouts: RolloutSampler


def build_parts(cfg: Config, inputs: RunInputs, ctx: DistContext, prompts: list[Example]) -> RunParts:
    """Call after seeding (a fresh LoRA adapter is drawn from the run's seed). prompts: the questions
    this run will send to the model; those longer than generation.max_prompt_length are counted and
    reported once, and the longest sizes the vLLM engine's KV cache (vllm_kv_cache_gib=auto)."""
    loaded, shards, reference_shards = load_and_place(cfg, inputs, ctx)
    # same questions on every rank (the question order has its own seed), different rollouts per rank
    torch.manual_seed(cfg.train.seed + ctx.rank)
    # the main rank reports long prompts; every rank with a colocated engine sizes its cache by them
    sizes_cache = cfg.generation.backend == "vllm"
    lengths = prompt_lengths(loaded.tokenizer, prompts, cfg) if ctx.is_main or sizes_cache else []
    if ctx.is_main:
        report_long_prompts(lengths, cfg)
    generator = build_generator(
        cfg, loaded.model, loaded.tokenizer.pad_token_id, loaded.stop_ids, seed=cfg.train.seed + ctx.rank,
        rank=ctx.rank, barrier=ctx.barrier, longest_prompt=max(lengths, default=None),
        engine_dtype=engine_dtype(cfg, next(loaded.model.parameters()).dtype, ctx.device),
    )  # fmt: skip
    rollouts = RolloutSampler(cfg, generator, loaded.tokenizer, loaded.stop_ids, inputs.env_factory)
    return RunParts(
        inputs.splits, inputs.rewards, inputs.eval_rewards, loaded, shards, reference_shards, generator, rollouts
    )
