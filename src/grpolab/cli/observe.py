"""Subcommands for looking at runs: `report`, `runs`, `tensorboard`, `sweep`, `journal`.

    grpolab report outputs/grpo/2025-01-01_12-00-00          # -> that run's report.html
    grpolab report RUN_A RUN_B --out compare.html            # curves overlaid
    grpolab report outputs/sweeps/grpo-2025-01-01_12-00-00   # every run inside, overlaid
    grpolab runs [outputs]
    grpolab tensorboard [--logdir outputs] [--port 6006]
    grpolab journal [FILE]                                   # default: <OUTPUT_DIR or outputs>/JOURNAL.md
    grpolab sweep [--config P] optim.lr=1e-6,3e-6 train.seed=1,2 [-- train.max_steps=50 ...]

Data goes to stdout (tables, paths), progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _run_dirs(paths: list[Path]) -> list[Path]:
    """A run directory as given; any other folder stands for every run inside it (a sweep, outputs)."""
    from grpolab.observe.runs import find_run_dirs

    found: list[Path] = []
    for path in paths:
        found += find_run_dirs(path)
    return list(dict.fromkeys(found))


def cmd_report(args: argparse.Namespace) -> int:
    from grpolab.observe.report import write_comparison, write_report

    missing = [str(p) for p in args.run_dirs if not p.is_dir()]
    if missing:
        return _error(f"not a directory: {', '.join(missing)}")
    runs = _run_dirs(args.run_dirs)
    if not runs:
        return _error(f"no run (metrics.jsonl or status.json) under {', '.join(map(str, args.run_dirs))}")
    if len(runs) == 1:
        out = write_report(runs[0], args.out)
    else:
        default = args.run_dirs[0] / "comparison.html" if len(args.run_dirs) == 1 else Path("comparison.html")
        out = write_comparison(runs, args.out or default)
    print(out)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from grpolab.observe.runs import list_runs, runs_table

    runs = list_runs(args.outputs)
    if not runs:
        print(f"no runs under {args.outputs}", file=sys.stderr)
        return 0
    console = Console()
    if not console.is_terminal:  # piped to a file or grep: wide lines beat 80-column wrapping
        console.width = 200
    console.print(runs_table(runs))
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(args.logdir), "--port", str(args.port)]
    command += ["--bind_all"] if args.bind_all else []
    print(f"TensorBoard for {args.logdir} on port {args.port} (Ctrl-C stops it)", file=sys.stderr)
    try:
        return subprocess.call(command)  # a child process: Ctrl-C stops it and returns here
    except KeyboardInterrupt:
        return 0


def cmd_journal(args: argparse.Namespace) -> int:
    from grpolab.compat.load import load_config
    from grpolab.observe.journal import journal_path

    path = args.file or journal_path(load_config(None, []))  # honours OUTPUT_DIR as runs do
    if not path.is_file():
        print(f"no journal at {path} yet: every `grpolab train` run appends its entry there", file=sys.stderr)
        return 0
    print(path.read_text(encoding="utf-8"), end="")
    return 0


def split_sweep_args(items: list[str]) -> tuple[list[str], list[str]]:
    """`grid... -- fixed...` -> (grid, fixed)."""
    if "--" in items:
        cut = items.index("--")
        return items[:cut], items[cut + 1 :]
    return items, []


def cmd_sweep(args: argparse.Namespace) -> int:
    from grpolab.cli.sweep import default_sweep_dir, run_sweep
    from grpolab.compat.load import load_config

    grid, fixed = split_sweep_args(args.grid)
    preset = args.config or "default"  # as `grpolab train` does
    if not grid:
        return _error("sweep needs at least one key=v1,v2 grid value")
    if args.sweep_dir:
        sweep_dir = Path(args.sweep_dir)
    else:
        cfg = load_config(preset, fixed)
        sweep_dir = default_sweep_dir(cfg.train.output_dir, cfg.train.run_name)
    print(f"sweep directory: {sweep_dir}", file=sys.stderr)

    def progress(row: dict[str, Any]) -> None:
        print(f"  {row['status']}: {row['run_dir']}", file=sys.stderr)

    rows = run_sweep(preset, fixed, grid, sweep_dir, on_result=progress)
    print((sweep_dir / "results.md").read_text(encoding="utf-8"))
    ok = all(str(row["status"]).startswith(("finished", "stopped_early")) for row in rows)
    return 0 if ok else 1


def add_observe_parsers(subparsers: Any) -> None:
    """Register report, runs, tensorboard and sweep on the `grpolab` subparsers."""
    report = subparsers.add_parser("report", help="write report.html (several runs: one overlaid page)")
    report.add_argument("run_dirs", nargs="+", type=Path, help="run directories, or folders of runs")
    report.add_argument("--out", type=Path, help="output file (default: <run>/report.html)")
    report.set_defaults(func=cmd_report)

    runs = subparsers.add_parser("runs", help="list runs with status, steps and best accuracy")
    runs.add_argument("outputs", nargs="?", type=Path, default=Path("outputs"), help="outputs folder")
    runs.set_defaults(func=cmd_runs)

    tensorboard = subparsers.add_parser("tensorboard", help="serve TensorBoard over the outputs folder")
    tensorboard.add_argument("--logdir", type=Path, default=Path("outputs"))
    tensorboard.add_argument("--port", type=int, default=6006)
    tensorboard.add_argument("--bind-all", action="store_true", help="listen on all interfaces")
    tensorboard.set_defaults(func=cmd_tensorboard)

    journal = subparsers.add_parser("journal", help="print the research journal (one entry per run)")
    journal.add_argument("file", nargs="?", type=Path, help="journal file (default: <output_dir>/JOURNAL.md)")
    journal.set_defaults(func=cmd_journal)

    sweep = subparsers.add_parser(
        "sweep",
        help="run a grid of configs one after another",
        description="Options first, then the grid, then `--` and overrides shared by every run.",
    )
    sweep.add_argument("--config", "-c", help="preset name (configs/NAME.yaml) or YAML path")
    sweep.add_argument("--sweep-dir", help="default: <output_dir>/sweeps/<run_name>-<timestamp>")
    # REMAINDER keeps the `--` that separates the grid from the fixed overrides.
    sweep.add_argument("grid", nargs=argparse.REMAINDER, help="key=v1,v2 ... [-- key=value ...]")
    sweep.set_defaults(func=cmd_sweep)
