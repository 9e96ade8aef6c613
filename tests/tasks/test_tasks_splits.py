"""Properties every synthetic task's splits must have, over many seeds and sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpolab.config.schema import DataConfig
from grpolab.data import Splits, build_splits

SYNTHETIC = ["arithmetic", "small_numbers", "mixed"]


def questions(splits: Splits) -> tuple[list[str], list[str], list[str]]:
    return (
        [e.question for e in splits.train],
        [e.question for e in splits.val],
        [e.question for e in splits.test],
    )


@settings(max_examples=30, deadline=None)
@given(
    task=st.sampled_from(SYNTHETIC),
    seed=st.integers(0, 2**32),
    train=st.integers(1, 150),
    val=st.integers(1, 60),
    test=st.integers(1, 60),
)
def test_sizes_unique_and_disjoint(task: str, seed: int, train: int, val: int, test: int) -> None:
    data = DataConfig(task=task, train_size=train, val_size=val, test_size=test)
    splits = build_splits(data, seed)
    tr, va, te = questions(splits)
    assert (len(tr), len(va), len(te)) == (train, val, test)
    everything = tr + va + te
    assert len(set(everything)) == len(everything)  # unique within and across splits
    assert all(e.category for e in splits.train + splits.val + splits.test)


@pytest.mark.parametrize("task", SYNTHETIC)
def test_same_seed_same_splits_other_seed_other_splits(task: str) -> None:
    data = DataConfig(task=task, train_size=100, val_size=20, test_size=20)
    assert build_splits(data, 7) == build_splits(data, 7)
    assert questions(build_splits(data, 7)) != questions(build_splits(data, 8))
    # Different seeds should not merely permute the same test set either.
    assert set(questions(build_splits(data, 7))[2]) != set(questions(build_splits(data, 8))[2])


@pytest.mark.parametrize("task", SYNTHETIC)
def test_growing_train_keeps_test_and_val(task: str) -> None:
    small = build_splits(DataConfig(task=task, train_size=20, val_size=15, test_size=25), 3)
    large = build_splits(DataConfig(task=task, train_size=200, val_size=15, test_size=25), 3)
    assert small.test == large.test and small.val == large.val
    assert large.train[:20] == small.train


def test_val_size_argument_overrides_config() -> None:
    data = DataConfig(train_size=30, val_size=10, test_size=10)
    splits = build_splits(data, 0, val_size=25)
    assert len(splits.val) == 25 and len(splits.test) == 10 and len(splits.train) == 30
