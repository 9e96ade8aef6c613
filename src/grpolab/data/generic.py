"""Any question/answer dataset: local data (task "jsonl") or a hub dataset (task "hf").

Local data is one file (data.path: .jsonl/.json/.parquet/.csv), files matched by data.data_files
patterns, or a directory written by `datasets`' save_to_disk (data.path); see local_datasets.py.

Columns come from the config: data.question_column, data.answer_column, and optionally
data.category_column (without it every example's category is the task name). Every column but
"prompt" (TRL's `prompts`) is kept in Example.fields under its own name, the configured ones too,
so a reward reads e.g. `solution` or `unit` by name, exactly as the Python API passes the same rows;
`question`, `answer` and `category` are also offered, as the configured columns' values.

Splitting: duplicate questions are dropped (first occurrence kept), the rest is shuffled with the
seed, then test, val and train are cut in that order. Test and val must fit; train takes what is
left up to data.train_size (a warning says when that is less), so train_size=100000 means "all".
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from grpolab.config.schema import DataConfig
from grpolab.data import hub
from grpolab.data.base import DataError, Example, Sizes, Splits, check_answer, check_space, cut_splits
from grpolab.data.files import Row, read_rows
from grpolab.data.local_datasets import Source, data_files_sources, saved_dataset_source

log = logging.getLogger(__name__)

HF_LOCAL_HINT = (
    "To use a local copy instead, set data.task=jsonl and data.path=/path/to/file.jsonl "
    "(.jsonl, .json, .parquet or .csv with the same columns)."
)

MakeExample = Callable[[int, Row], Example]


def required(row: Row, column: str, number: int, source: str) -> str:
    """The row's value in `column` as text; a missing or empty value names the row and column."""
    if column not in row:
        have = ", ".join(map(str, row)) or "nothing"
        raise DataError(f"{source}: row {number}: missing column '{column}' (row has: {have})")
    value = row[column]
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataError(f"{source}: row {number}: column '{column}' is empty")
    return text


def answer(row: Row, column: str, number: int, source: str) -> str:
    """The gold answer as text; see `check_answer` for what it refuses."""
    check_answer(row.get(column), f"{source}: row {number}", column)
    return required(row, column, number, source)


def row_maker(data: DataConfig, source: str) -> MakeExample:
    """Turns a row into an Example using the configured columns; every column goes to fields."""

    def make(number: int, row: Row) -> Example:
        return Example(
            question=required(row, data.question_column, number, source),
            answer=answer(row, data.answer_column, number, source),
            category=(required(row, data.category_column, number, source) if data.category_column else data.task),
            fields={k: v for k, v in row.items() if k != "prompt"},  # as TRL: the prompt is `prompts`
            where=f"{source}: row {number}",
        )

    return make


def to_examples(rows: Iterable[tuple[int, Row]], make: MakeExample) -> list[Example]:
    return [make(number, row) for number, row in rows]


def unique(examples: Iterable[Example], exclude: set[str] | None = None) -> list[Example]:
    """Examples with distinct question text, first occurrence kept, minus questions in `exclude`."""
    seen = set(exclude or ())
    out = []
    for example in examples:
        if example.question not in seen:
            seen.add(example.question)
            out.append(example)
    return out


def shuffled(examples: list[Example], seed: int) -> list[Example]:
    order = list(examples)
    random.Random(seed).shuffle(order)
    return order


def fit_train(available: int, sizes: Sizes, what: str) -> Sizes:
    """Sizes with train shrunk to what is left after test and val (which must fit, with one train
    question at least)."""
    check_space(available, Sizes(train=1, val=sizes.val, test=sizes.test), what, "")
    left = available - sizes.test - sizes.val
    if sizes.train > left:
        log.warning("%s: data.train_size=%d but only %d questions are left for train", what, sizes.train, left)
        return Sizes(train=left, val=sizes.val, test=sizes.test)
    return sizes


def split_examples(examples: list[Example], seed: int, sizes: Sizes, what: str) -> Splits:
    """Deduplicate, shuffle with `seed`, cut test, val, train."""
    pool = unique(examples)
    return cut_splits(shuffled(pool, seed), fit_train(len(pool), sizes, what))


def source_name(data: DataConfig) -> str:
    """The data as a whole, for messages about all of it (sizes); rows name their own file."""
    if data.path:
        return f"data.path {data.path}"
    if data.data_files and data.task != "hf":
        return f"data.data_files {data.data_files}"
    return f"dataset '{data.hf_name}'"


def as_rows(dataset: Any) -> Iterable[tuple[int, Row]]:
    """Number the rows of a hub split from 1, as local files are numbered."""
    return enumerate(dataset, start=1)


def local_sources(data: DataConfig) -> list[Source] | None:
    """The rows of local data, one source per file (each numbered from 1 for its errors), or None
    when the data comes from the hub. For the hf task, data.data_files are files of the hub repo."""
    if data.path and Path(data.path).expanduser().is_dir():  # save_to_disk's (else a one-line error)
        return [saved_dataset_source(data.path, data.hf_split)]
    if data.path:
        return [(source_name(data), read_rows(data.path))]
    if data.data_files and data.task != "hf":
        return data_files_sources(data.data_files)
    return None


def load_sources(data: DataConfig) -> list[Source]:
    """Local data when set (it wins over a hub id), else the hub split data.hf_split of data.hf_name."""
    local = local_sources(data)
    if local is not None:
        return local
    assert data.hf_name, "config validation requires hf_name for the hf task"
    dataset = hub.load_split(data.hf_name, data.hf_config, data.hf_split, HF_LOCAL_HINT, data_files=data.data_files)
    if len(dataset) == 0:
        raise DataError(f"dataset '{data.hf_name}' split {data.hf_split!r} has no rows")
    return [(source_name(data), list(as_rows(dataset)))]


def sources_examples(sources: list[Source], maker: Callable[[str], MakeExample]) -> list[Example]:
    """Examples of every source, in order; `maker(source name)` turns a row into an Example."""
    return [example for name, rows in sources for example in to_examples(rows, maker(name))]


def build(data: DataConfig, seed: int, sizes: Sizes) -> Splits:
    examples = sources_examples(load_sources(data), lambda name: row_maker(data, name))
    return split_examples(examples, seed, sizes, source_name(data))


def validate(data: DataConfig, sizes: Sizes) -> None:
    """Local data is read in full (cheap next to a model); a hub dataset only has its reachability
    checked, since downloading it is the expensive part the check exists to avoid."""
    local = local_sources(data)
    if local is not None:
        pool = unique(sources_examples(local, lambda name: row_maker(data, name)))
        fit_train(len(pool), sizes, source_name(data))
    elif data.hf_name:
        hub.check_hub(data.hf_name, HF_LOCAL_HINT)
