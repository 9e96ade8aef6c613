"""The reliability audit of issue 14, rerunnable: kill a short tiny-model run at several moments,
resume it and compare its metrics with an uninterrupted run; then feed the CLI every malformed input
of tests/bad_inputs.py and count the clean one-line errors.

    PYTHONPATH=src flock /tmp/heavy.lock python benchmarks/chaos_audit.py [--out DIR]

Prints one row per kill moment and per bad input, then the summary table: kills survived, identical
trajectories, bad inputs with a clean error, each out of the number tried. A few minutes on 2 CPUs.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bad_inputs import CASES, run_case
from chaos import environment, kill_when, resume, run_dir, same_trajectory, status, step_rows, train_command

# (what, the path whose appearance triggers the signal, the signal)
MOMENTS = [
    ("mid-step (first metrics written)", "metrics.jsonl", signal.SIGKILL),
    ("right after checkpoint step-1", "checkpoints/step-1", signal.SIGKILL),
    ("mid-checkpoint (.tmp-step-*)", "checkpoints/.tmp-step-*", signal.SIGKILL),
    ("mid-best-checkpoint (.tmp-best-*)", "checkpoints/.tmp-best-*", signal.SIGKILL),
    ("right after checkpoint step-3", "checkpoints/step-3", signal.SIGKILL),
    ("mid-export (.tmp-final-*)", ".tmp-final-*", signal.SIGKILL),
    ("after export (final evaluation)", "final", signal.SIGKILL),
    ("SIGTERM after checkpoint step-2", "checkpoints/step-2", signal.SIGTERM),
    ("SIGINT after checkpoint step-2", "checkpoints/step-2", signal.SIGINT),
]


def audit_kills(root: Path) -> tuple[int, int, int]:
    whole = root / "whole"
    if subprocess.run(train_command(whole), env=environment(), capture_output=True).returncode != 0:
        raise SystemExit("the uninterrupted reference run failed")
    reference = step_rows(run_dir(whole))
    survived = identical = tried = 0
    for index, (what, pattern, sig) in enumerate(MOMENTS):
        out = root / f"kill-{index}"
        started = time.perf_counter()
        if not kill_when(out, pattern, sig):
            print(f"  {what:40s} not reached (the run ended first)")
            continue
        tried += 1
        code = resume(out)
        directory = run_dir(out)
        ok = code == 0 and status(directory).get("status") == "finished"
        same = ok and same_trajectory(reference, step_rows(directory))
        survived += ok
        identical += same
        fresh = len(list(out.glob("*/*/status.json"))) > 1  # killed before any checkpoint: started again
        verdict = (
            ("identical" + (" (restarted: no checkpoint yet)" if fresh else ""))
            if same
            else "resumed, metrics differ"
            if ok
            else f"resume failed (exit {code})"
        )
        print(f"  {what:40s} {signal.Signals(sig).name:8s} {verdict}  ({time.perf_counter() - started:.0f} s)")
    return tried, survived, identical


def audit_bad_inputs(root: Path) -> tuple[int, int]:
    clean = 0
    for index, case in enumerate(CASES):
        outcome = run_case(case, root / f"bad-{index}")
        good = outcome.problem is None and case.expect in outcome.stderr
        clean += good
        shown = outcome.stderr.strip().splitlines()[-1][:110] if outcome.stderr.strip() else ""
        print(f"  {'ok ' if good else 'BAD'} {case.name:45s} {outcome.problem or shown}")
    return len(CASES), clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpolab-chaos-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        print("kills (tiny model, 4 steps, a checkpoint every step):")
        tried, survived, identical = audit_kills(root)
        print("bad inputs:")
        cases, clean = audit_bad_inputs(root)
    print()
    print("| check                                   | result  |")
    print("|-----------------------------------------|---------|")
    print(f"| kills survived (resume finished)        | {survived}/{tried}    |")
    print(f"| identical trajectories after resume     | {identical}/{tried}    |")
    print(f"| bad inputs with one clean error line    | {clean}/{cases}   |")


if __name__ == "__main__":
    main()
