"""One-step-off rollouts (`train.max_staleness=1`): step t+1's groups are sampled while step t trains.

The cadence of step s (the trainer's `train_step`):
    groups = the ones prefetched during step s-1 (or sampled now: the first step, a resume without any)
    launch the sampling of step s+1's groups in one background thread, with the engine's weights
        (those before step s's update: the engine is only synced between steps)
    update the policy on `groups` (main thread)
    wait for the prefetch; only then load the new weights into the engine
So every step after the first trains on rollouts one optimizer step old (`async/staleness` = 1); the
sampler importance-sampling correction (algo/importance.py), which weighs each token by
exp(trainer_old_logp - sampler_logp) with the log-probs recorded at sampling, corrects the staleness
together with the engine mismatch. Evaluation and checkpoints run between steps, with nothing in
flight; a checkpoint keeps the prefetched groups, so a resumed run trains on them as the uninterrupted
one did. The prefetch draws its request seeds from a stream of its own, seeded on the main thread
(rollout/seeds.py): the same seed gives the same run whatever the threads' timing.

This needs a backend holding its own weights (vllm, vllm_server) and one process: under torchrun the
prefetch's collectives (gathering rewards) would interleave with the update's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from grpolab.config.load import ConfigError
from grpolab.config.schema import Config
from grpolab.parallel.distributed import DistContext
from grpolab.rollout.seeds import seed_stream
from grpolab.train.checkpoint import load_prefetched
from grpolab.train.groups import RoundSource, StepGroups, sample_groups

__all__ = ["Prefetch", "Sampled", "check_one_process", "load_prefetched", "sample_step"]


@dataclass
class Sampled:
    """One step's groups and where they came from."""

    groups: StepGroups
    version: int  # optimizer steps in the weights that sampled them
    epoch: int  # the question order's epoch after drawing them
    seconds: dict[str, float]  # generation and reward time spent sampling them
    window: tuple[float, float] = (0.0, 0.0)  # time.perf_counter() at the start and end of the sampling


def sample_step(cfg: Config, ctx: DistContext, source: RoundSource, version: int) -> Sampled:
    """Sample and score one step's groups with the engine's current weights (`version` optimizer steps)."""
    started = time.perf_counter()
    groups = sample_groups(cfg, ctx, source)
    return Sampled(groups, version, source.order.epoch, source.seconds, (started, time.perf_counter()))


def check_one_process(cfg: Config, ctx: DistContext) -> None:
    if cfg.train.max_staleness > 0 and ctx.enabled:
        raise ConfigError(  # a UserError: the CLI prints this one line
            f"train.max_staleness={cfg.train.max_staleness} runs in one process only (world size "
            f"{ctx.world_size}): the prefetch's collectives would interleave with the update's"
        )


def _in_own_stream(sample: Callable[[], Sampled], seed: int, threads: int) -> Sampled:
    # OpenMP's thread count is per thread: a new one starts from the default, and vLLM's CPU attention
    # refuses to run with another count than the one its metadata was planned with (the main thread's)
    torch.set_num_threads(threads)
    with seed_stream(seed):
        return sample()


class Prefetch:
    """The groups sampled ahead of their step (`pending`, saved with each checkpoint) and the one
    sampling in flight."""

    def __init__(self, max_staleness: int) -> None:
        self.enabled = max_staleness > 0
        self.pending: Sampled | None = None
        self._flight: Future[Sampled] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="grpolab-prefetch") if self.enabled else None

    def launch(self, sample: Callable[[], Sampled], seed: int) -> None:
        """Start `sample()` in the background thread; its request seeds come from `seed`'s stream."""
        assert self._pool is not None and self._flight is None, "one prefetch at a time, max_staleness > 0"
        self._flight = self._pool.submit(_in_own_stream, sample, seed, torch.get_num_threads())

    def settle(self, update: tuple[float, float], staleness: int) -> dict[str, float]:
        """Wait for the prefetch (its error is raised here); the step's staleness and overlap metrics.
        update: perf_counter at the start and end of this step's policy update."""
        waiting = time.perf_counter()
        metrics = {"async/staleness": float(staleness)}
        if self._flight is not None:
            flight, self._flight = self._flight, None
            self.pending = flight.result()
            start, end = self.pending.window
            metrics["time/overlap"] = max(0.0, min(end, update[1]) - max(start, update[0]))
            metrics["time/prefetch_wait"] = time.perf_counter() - waiting
        return metrics
