"""Reading a local dataset file into rows (one dict per row), in file order.

Plain readers rather than `datasets.load_dataset("json", ...)`: they keep exact row numbers for
error messages ("row 17: missing column 'answer'"), tell a missing key from a null, write nothing
to the HF cache, and skip a one-second import for a file of a few thousand lines.
Rows are numbered from 1; for JSONL the row number is the line number.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from grpolab.data.base import DataError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

Row = dict[str, Any]


def read_rows(path: str | Path) -> list[tuple[int, Row]]:
    """(row number, row) pairs of a .jsonl/.json/.parquet/.csv file; a file with no rows is an error."""
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"data.path: unsupported file type '{suffix}' ({file}); use one of {', '.join(SUFFIXES)}")
    if not file.is_file():
        raise DataError(f"data.path: file not found: {file}")
    if suffix == ".parquet":
        rows = _parquet(file)
    elif suffix == ".csv":
        rows = _csv(file)
    else:
        rows = _json(file)
    if not rows:
        raise DataError(f"data.path: {file} has no rows")
    return rows


def _jsonl(file: Path, text: str) -> list[tuple[int, Row]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"data.path {file}: row {number}: not valid JSON ({err.msg})") from err
        rows.append((number, _as_row(row, number, file)))
    return rows


def _text(file: Path) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"data.path {file}: line {line} is not valid UTF-8 ({err.reason}); save the file as UTF-8"
        ) from None


def _json(file: Path) -> list[tuple[int, Row]]:
    text = _text(file)
    if file.suffix.lower() == ".jsonl":
        return _jsonl(file, text)
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a .json file holding JSON lines, as HF exports write them
            return _jsonl(file, text)
        raise DataError(f"data.path {file}: not valid JSON ({err})") from err
    if not isinstance(data, list):
        raise DataError(f"data.path {file}: expected a list of objects or JSON lines, got {type(data).__name__}")
    return [(number, _as_row(row, number, file)) for number, row in enumerate(data, start=1)]


def _as_row(row: Any, number: int, file: Path) -> Row:
    if not isinstance(row, dict):
        raise DataError(f"data.path {file}: row {number}: expected an object, got {type(row).__name__}")
    return row


def _parquet(file: Path) -> list[tuple[int, Row]]:
    import pyarrow.parquet as pq  # imported here: only parquet users pay for it

    try:
        table = pq.read_table(file)
    except Exception as err:  # pyarrow raises several types for a bad file; all mean the same here
        raise DataError(f"data.path {file}: cannot read as Parquet ({err})") from err
    return list(enumerate(table.to_pylist(), start=1))


def _csv(file: Path) -> list[tuple[int, Row]]:
    with io.StringIO(_text(file), newline="") as handle:
        reader = csv.DictReader(handle)
        # A short line gets None for its last columns: dropping them makes them count as missing.
        return [
            (number, {k: v for k, v in row.items() if v is not None and k is not None})
            for number, row in enumerate(reader, start=1)
        ]
