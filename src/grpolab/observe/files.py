"""The run directory's plain files: metrics.jsonl, samples.jsonl, train.log and status.json.

These are the sinks that always work (no optional dependency, no network), so everything else
(report.html, `grpolab runs`, a resumed run) reads them. Choices worth knowing:

- JSONL files are opened in append mode and line-buffered: a resumed run continues the same files
  and a crash loses at most the line being written (a torn last line is cut when the file is opened
  again, so the next record is not glued to it). A resume can therefore repeat a few steps;
  readers keep the LAST line for a step (see `read_jsonl` users in report.py).
- Non-finite floats are written as `null`: NaN is not JSON, and jq / JavaScript reject it.
- status.json is replaced atomically (temp file + rename), because `grpolab runs` may read it while
  the trainer writes it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rich.console import Console, RenderableType

from grpolab.config.load import redact_text

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
STATUS_FILE = "status.json"
LOG_FILE = "train.log"
CONFIG_FILE = "config.yaml"
STATUSES = ("running", "finished", "stopped_early", "degraded", "crashed", "interrupted")


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: numpy/torch scalars become floats, non-finite floats become None."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar or 0-d tensor: keep ints as ints
        return jsonable(value.item())
    try:
        return jsonable(float(value))
    except (TypeError, ValueError):
        return str(value)


def repair_torn_tail(path: Path) -> str | None:
    """A JSONL file whose last line has no newline (a process killed mid-write): the line is kept and
    ended when it parses, else cut, so that the next appended record starts a line of its own instead
    of being glued to the torn one. Returns "ended" or "cut" when it changed the file, else None."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size == 0:
        return None
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return None
        start, pos = 0, size
        while pos > 0:  # the last newline, searched backwards in blocks (metrics files grow large)
            pos = max(0, pos - 65536)
            fh.seek(pos)
            newline = fh.read(min(65536, size - pos)).rfind(b"\n")
            if newline >= 0:
                start = pos + newline + 1
                break
        fh.seek(start)
        try:
            whole = isinstance(json.loads(fh.read()), dict)
        except ValueError:
            whole = False
        if whole:
            fh.seek(size)
            fh.write(b"\n")
            return "ended"
        fh.truncate(start)
        return "cut"


class JsonlWriter:
    """Appends one JSON object per line; flushed per line so readers never wait for close()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if repair_torn_tail(path) == "cut":
            logging.getLogger("grpolab").warning("%s: cut a torn last line (a killed process's)", path)
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path.name} is closed")
        self._fh.write(json.dumps(jsonable(record), ensure_ascii=False, allow_nan=False) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a crash mid-write) is skipped, not an error."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


class TextLog:
    """train.log: what the console shows, minus the progress bar, with a timestamp per message."""

    WIDTH = 110

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        # A file console renders rich tables as plain text (no colour codes: not a terminal).
        self._console = Console(
            file=self._fh, width=self.WIDTH, color_system=None, force_terminal=False, highlight=False
        )

    def line(self, level: str, message: str) -> None:
        if self._fh is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._fh.write(f"{stamp} {level:<7} {redact_text(message)}\n")

    def render(self, renderable: RenderableType) -> None:
        if self._fh is not None:
            self._console.print(renderable)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """Replace status.json atomically (a reader sees the old or the new file, never half of one)."""
    path = Path(run_dir) / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(jsonable(status), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json as a dict; {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
