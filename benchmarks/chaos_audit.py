"""The reliability audit of issues 14 and 22, rerunnable: kill a short tiny-model run at several
moments, resume it and compare its metrics with an uninterrupted run; feed the CLI every malformed
input of tests/bad_inputs.py and count the clean one-line errors; start two processes on one run name
(new runs, then two resumes of one run); hang a reward in every phase and send SIGTERM / SIGINT.

    PYTHONPATH=src flock /tmp/heavy.lock python benchmarks/chaos_audit.py [--out DIR] [--only issue22]

Prints one row per scenario, then the summary table. A few minutes on 2 CPUs (`--only issue22`: the
two-process and hang scenarios alone, about two minutes).
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
from chaos import (
    PHASES,
    environment,
    hang_command,
    hang_environment,
    kill_when,
    resume,
    run_dir,
    same_trajectory,
    signal_while_hung,
    status,
    step_rows,
    steps_logged_once,
    train_command,
    two_runs_at_once,
)

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


def audit_two_processes(root: Path) -> tuple[int, int]:
    """(scenarios, scenarios where the two processes kept apart): two new runs with one name started
    together; then two `--resume` of one finished run started together (one trains, one is refused)."""
    apart = 0
    done = two_runs_at_once(root / "two-new", "train.max_steps=2")
    dirs = sorted(p.parent for p in (root / "two-new").glob("*/*/status.json"))
    ok = [d.returncode for d in done] == [0, 0] and len(dirs) == 2 and all(steps_logged_once(d) for d in dirs)
    apart += ok
    print(f"  {'two new runs, same name, same second':45s} {len(dirs)} run directories, exits "
          f"{[d.returncode for d in done]}, every step once: {ok}")  # fmt: skip
    out = root / "two-resumes"
    subprocess.run(train_command(out, "train.max_steps=2"), env=environment(), capture_output=True, check=True)
    done = two_runs_at_once(out, "train.max_steps=12", "--resume")
    codes = sorted(d.returncode for d in done)
    refused = [d.stderr.strip().splitlines()[-1] for d in done if d.returncode == 1]
    once = steps_logged_once(run_dir(out))
    # one trains to 12; the other is refused naming the pid, or (had it come later) found the run finished
    ok = once and ((codes == [0, 1] and "in use by pid" in refused[0]) or codes == [0, 0])
    apart += ok
    print(f"  {'two --resume of one run, same second':45s} exits {codes}, every step once: {once}")
    if refused:
        print(f"    refused: {refused[0][:110]}")
    return 2, apart


def audit_hangs(root: Path) -> tuple[int, int, float]:
    """(scenarios, hangs, slowest stop in seconds): a reward that never returns in each phase, then
    SIGTERM (plain and async rewards) or SIGINT; and one run where the time limit alone ends the wait."""
    tried = hangs = 0
    slowest = 0.0
    cases = [(phase, fn, signal.SIGTERM) for phase in PHASES for fn in ("slow", "slow_async")]
    cases.append(("training step (rewards)", "slow", signal.SIGINT))
    for index, (phase, fn, sig) in enumerate(cases):
        code, seconds = signal_while_hung(root / f"hang-{index}", PHASES[phase], fn=fn, sig=sig, wait_s=60)
        tried += 1
        hangs += code is None
        slowest = max(slowest, seconds)
        state = status(run_dir(root / f"hang-{index}")) if code is not None else {}
        print(f"  {phase + ' / ' + fn:45s} {signal.Signals(sig).name:8s} exit {code} after {seconds:4.1f} s, "
              f"status {state.get('status')} signal {state.get('signal')}")  # fmt: skip
    out = root / "hang-timeout"
    env = hang_environment(out, PHASES["training step (rewards)"])
    started = time.perf_counter()
    try:
        done = subprocess.run(
            hang_command(out, "slow", "rewards.timeout_s=2"), env=env, capture_output=True, timeout=300,
        )  # fmt: skip
        code: int | None = done.returncode
    except subprocess.TimeoutExpired:
        code = None
    tried += 1
    hangs += code is None
    timeouts = [r.get("rewards/slow/timeouts") for r in step_rows(run_dir(out)).values() if "loss" in r]
    print(f"  {'no signal, rewards.timeout_s=2':45s} exit {code} after {time.perf_counter() - started:.0f} s, "
          f"rewards/slow/timeouts per step {timeouts}")  # fmt: skip
    return tried, hangs, slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--only", choices=["issue22"], help="only the two-process and hang scenarios")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpolab-chaos-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        if not args.only:
            print("kills (tiny model, 4 steps, a checkpoint every step):")
            tried, survived, identical = audit_kills(root)
            print("bad inputs:")
            cases, clean = audit_bad_inputs(root)
        print("two processes, one run name:")
        pairs, apart = audit_two_processes(root)
        print("a reward that never returns:")
        hung_cases, hangs, slowest = audit_hangs(root)
    print()
    print("| check                                   | result  |")
    print("|-----------------------------------------|---------|")
    if not args.only:
        print(f"| kills survived (resume finished)        | {survived}/{tried}    |")
        print(f"| identical trajectories after resume     | {identical}/{tried}    |")
        print(f"| bad inputs with one clean error line    | {clean}/{cases}   |")
    print(f"| two processes kept apart                | {apart}/{pairs}    |")
    print(f"| hangs (no exit 60 s after the signal)   | {hangs}/{hung_cases}    |")
    print(f"| slowest stop after a signal             | {slowest:.1f} s  |")


if __name__ == "__main__":
    main()
