"""Observing a run: console, train.log, metrics/samples JSONL, status.json, TensorBoard, W&B.

The trainer talks to one object, `Tracker` (see tracker.py for the call sequence). `read_jsonl` and
`read_status` are the readers report.py and runs.py share with it, so the file formats live in one
place (files.py).
"""

from grpolab.observe.files import (
    METRICS_FILE,
    SAMPLES_FILE,
    STATUS_FILE,
    STATUSES,
    jsonable,
    read_jsonl,
    read_status,
    write_status,
)
from grpolab.observe.tracker import Tracker

__all__ = [
    "METRICS_FILE",
    "SAMPLES_FILE",
    "STATUSES",
    "STATUS_FILE",
    "Tracker",
    "jsonable",
    "read_jsonl",
    "read_status",
    "write_status",
]
