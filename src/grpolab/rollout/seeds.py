"""Where a generation request's seed comes from: torch's global RNG, so `train.seed` decides the
rollouts, or a stream of the calling thread's own.

The one-step-off prefetch (train/prefetch.py) samples in a background thread while the main thread
trains; both drawing from torch's one global generator would make the rollouts depend on thread
timing. The prefetch therefore draws from a generator of its own, seeded from the main stream on the
main thread, and every backend draws its request seeds through `draw_seed`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_local = threading.local()


def draw_seed() -> int:
    """A request seed from this thread's own stream (inside `seed_stream`), else from torch's global RNG."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=getattr(_local, "generator", None)).item())


@contextmanager
def seed_stream(seed: int) -> Iterator[None]:
    """Seeds drawn in this thread come from a generator seeded with `seed` (other threads are untouched)."""
    _local.generator = torch.Generator().manual_seed(seed)
    try:
        yield
    finally:
        _local.generator = None
