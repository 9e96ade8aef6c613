"""Local data through the `datasets` library: `data.data_files` patterns and `save_to_disk` directories.

    data.data_files: "data/train-*.jsonl"        -> datasets.load_dataset("json", data_files=[each file])
    data.data_files: [a.csv, b.csv]               -> the same, builder "csv"
    data.path: my_dataset/  (from save_to_disk)   -> datasets.load_from_disk (a DatasetDict: data.hf_split)

Patterns are resolved with `datasets`' own resolver (so `*`, `**` and `data/*` mean what they mean to
`load_dataset`), and each file is loaded on its own, so that an unusable row is reported as
"<file>: row 17: missing column 'answer'" — the row number within that file, counted from 1, as
for a single data.path file. A file that `datasets` cannot read at all is named in the error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grpolab.data.base import DataError
from grpolab.data.files import Row

# file suffix -> datasets' packaged builder
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}

Source = tuple[str, list[tuple[int, Row]]]  # (name for errors, numbered rows)


def as_list(data_files: str | list[str]) -> list[str]:
    return [data_files] if isinstance(data_files, str) else list(data_files)


@contextmanager
def _quiet() -> Iterator[None]:
    """No per-file progress bars (a run loads its data once; the bars would bury the first lines)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def resolve_files(data_files: str | list[str], base_path: str = ".") -> list[str]:
    """Every local file the patterns match, in pattern order (each pattern's matches sorted), once.
    A pattern that matches nothing, or a file type `datasets` has no builder for, is a DataError."""
    from datasets.data_files import resolve_pattern

    files: list[str] = []
    for pattern in as_list(data_files):
        try:
            matched = sorted(resolve_pattern(str(Path(pattern).expanduser()), base_path=base_path))
        except FileNotFoundError:
            matched = []
        if not matched:
            raise DataError(f"data.data_files: no file matches {pattern!r} (relative to {Path(base_path).resolve()})")
        files += [f for f in matched if f not in files]
    for file in files:
        if Path(file).suffix.lower() not in BUILDERS:
            known, suffix = ", ".join(BUILDERS), Path(file).suffix
            raise DataError(f"data.data_files: unsupported file type '{suffix}' ({file}); use one of {known}")
    return files


def data_files_sources(data_files: str | list[str]) -> list[Source]:
    """One source per matched file: its rows, numbered from 1 within the file."""
    import datasets

    sources = []
    with _quiet():
        for file in resolve_files(data_files):
            name = f"data.data_files {file}"
            try:
                dataset = datasets.load_dataset(BUILDERS[Path(file).suffix.lower()], data_files=[file], split="train")
            except Exception as err:  # pyarrow / datasets raise many types for an unreadable file
                raise DataError(f"{name}: cannot read it with datasets ({type(err).__name__}: {err})") from None
            sources.append((name, number_rows(dataset, name)))
    return sources


def is_saved_dataset(path: str | Path) -> bool:
    """A directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    folder = Path(path).expanduser()
    return folder.is_dir() and any((folder / marker).is_file() for marker in ("dataset_info.json", "dataset_dict.json"))


def saved_dataset_source(path: str | Path, split: str) -> Source:
    """The rows of a save_to_disk directory; for a DatasetDict, those of `split` (data.hf_split)."""
    import datasets

    folder = Path(path).expanduser()
    if not is_saved_dataset(folder):
        raise DataError(
            f"data.path {folder}: a directory must be one written by datasets' save_to_disk "
            "(dataset_info.json or dataset_dict.json inside); for files use data.data_files='dir/*.jsonl'"
        )
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as err:
        raise DataError(f"data.path {folder}: cannot load it with datasets.load_from_disk ({err})") from None
    name = f"data.path {folder}"
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{name}: no split {split!r} (data.hf_split); it has {', '.join(loaded)}")
        loaded, name = loaded[split], f"{name} split '{split}'"
    return name, number_rows(loaded, name)


def number_rows(dataset: Any, name: str) -> list[tuple[int, Row]]:
    rows = list(enumerate(dataset, start=1))
    if not rows:
        raise DataError(f"{name} has no rows")
    return rows
