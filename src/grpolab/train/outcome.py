"""The exit code of `grpolab train`, so a scheduler can tell how a run ended without reading files.

0    finished, or stopped early by patience
1    an error (config, data, model, a reward that scored nothing, disk full, ...)
2    bad command-line usage (argparse)
3    degraded: ran to the end but had no trainable signal for too long (status.json says why)
130  interrupted by SIGINT (Ctrl-C): 128 + 2, the shell convention; in any phase (train/signals.py),
     the last finished step saved when there is one
143  interrupted by SIGTERM (a scheduler's stop): 128 + 15, the same
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DEGRADED = 3


def exit_code(status: str, signum: int | None = None) -> int:
    """`status`: the run's final status; `signum`: the signal that interrupted it, if one did."""
    if status == "interrupted":
        return 128 + int(signum or signal.SIGTERM)
    if status == "degraded":
        return EXIT_DEGRADED
    if status in ("finished", "stopped_early"):
        return EXIT_OK
    return EXIT_ERROR
