"""Grid sweeps: every combination of some config values, one run after another, one results table.

    grpolab sweep optim.lr=1e-6,3e-6,1e-5 train.seed=1,2          # 6 runs
    grpolab train --multirun lr=1e-6,3e-6 seed=1,2               # same thing; short keys allowed

Layout: `<sweep_dir>/<NN>_<key=value...>/<run_name>/<timestamp>/` per combination, and
`<sweep_dir>/results.md` + `results.csv` (rewritten after every run, so a sweep killed half-way
still has the table of what finished). A run that raises becomes a "failed: ..." row with its
traceback in `<combination>/error.txt`; the sweep goes on. Every combination's config is resolved
before the first run starts, so a typo in the last value fails in a second, not after hours.
"""

from __future__ import annotations

import csv
import functools
import itertools
import re
import shlex
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpolab.compat.load import load_config
from grpolab.compat.seeds import expand_short_key
from grpolab.config.load import ConfigError

RunOne = Callable[[list[str], Path], dict[str, Any]]
RESULT_COLUMNS = ["status", "best_accuracy", "best_step", "final_reward", "seconds", "run_dir"]
_OPEN, _CLOSE = "[{(", "]})"


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: `[1,4],[1,8]` -> ['[1,4]', '[1,8]']."""
    values, current, depth, quote = [], "", 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def expand_key(key: str) -> str:
    """`lr` -> `optim.lr` (compat/seeds.py: the one place short and foreign keys are translated)."""
    return expand_short_key(key)


def parse_grid(items: list[str]) -> list[dict[str, str]]:
    """The cartesian product of `key=v1,v2,...` items; the last key varies fastest.

    >>> parse_grid(["optim.lr=1e-6,3e-6", "train.seed=1,2"])  # doctest: +NORMALIZE_WHITESPACE
    [{'optim.lr': '1e-6', 'train.seed': '1'}, {'optim.lr': '1e-6', 'train.seed': '2'},
     {'optim.lr': '3e-6', 'train.seed': '1'}, {'optim.lr': '3e-6', 'train.seed': '2'}]
    """
    axes: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"sweep value '{item}' must look like key=v1,v2,...")
        if key in axes:
            raise ConfigError(f"sweep key '{key}' given twice")
        values = split_values(text)
        if any(v == "" for v in values):
            raise ConfigError(f"sweep key '{key}': empty value in '{text}'")
        axes[key] = values
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def combo_name(index: int, combo: dict[str, str]) -> str:
    """A folder name that says what the run is: `03_lr=1e-05_seed=2` (unsafe characters -> '-')."""
    label = "_".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in combo.items())
    return f"{index:02d}_" + re.sub(r"[^\w.=+-]+", "-", label)[:80]


def combo_overrides(combo: dict[str, str]) -> list[str]:
    return [f"{expand_key(key)}={value}" for key, value in combo.items()]


def split_grid_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(fixed, grid) for `train --multirun`: an override with several values is a grid axis.

    >>> split_grid_overrides(["lr=1e-6,3e-6", "eval.pass_k=[1,5]", "seed=1"])
    (['eval.pass_k=[1,5]', 'seed=1'], ['lr=1e-6,3e-6'])
    """
    fixed: list[str] = []
    grid: list[str] = []
    for item in overrides:
        (grid if "=" in item and len(split_values(item.split("=", 1)[1])) > 1 else fixed).append(item)
    return fixed, grid


def default_sweep_dir(output_dir: str | Path, run_name: str) -> Path:
    """`<output_dir>/sweeps/<run_name>-<timestamp>`: a new folder per sweep, never mixed with an old one."""
    return Path(output_dir) / "sweeps" / f"{run_name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def default_run_one(overrides: list[str], out_dir: Path, *, preset: str | None = None) -> dict[str, Any]:
    """One real training run (imported lazily: the trainer pulls in torch and transformers)."""
    from grpolab.api import run_training
    from grpolab.observe.journal import journal_path, journaled

    # Every run of the sweep writes its entry to the journal a single run of the same config would use.
    journal = journal_path(load_config(preset, overrides))
    cfg = load_config(preset, [*overrides, f"train.output_dir={out_dir}", f"journal.path={journal}"])
    command = shlex.join(["grpolab", "train", *(["-c", preset] if preset else []), *overrides])
    summary = journaled(cfg, command, run_training)
    fields = ("run_dir", "status", "steps", "best_accuracy", "best_step", "final_reward", "seconds")
    return {name: getattr(summary, name, None) for name in fields}


def run_sweep(
    base_preset: str | None,
    fixed_overrides: list[str],
    grid: list[str],
    sweep_dir: Path,
    run_one: RunOne | None = None,
    *,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every combination of `grid` (with `fixed_overrides` applied first); return the result rows.

    `run_one(overrides, out_dir) -> dict` runs one training (default: `default_run_one` with
    `base_preset`); the keys of RESULT_COLUMNS it returns go into the table. `on_result` sees each
    row as it is made (the CLI prints progress with it).
    """
    combos = parse_grid(grid)
    for combo in combos:  # fail fast on a bad key or value, before any run starts
        load_config(base_preset, [*fixed_overrides, *combo_overrides(combo)])
    run = run_one or functools.partial(default_run_one, preset=base_preset)
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    keys = list(combos[0]) if combos else []
    rows: list[dict[str, Any]] = []
    for index, combo in enumerate(combos):
        out_dir = sweep_dir / combo_name(index, combo)
        out_dir.mkdir(parents=True, exist_ok=True)
        start = time.time()
        row: dict[str, Any] = dict(combo)
        try:
            result = run([*fixed_overrides, *combo_overrides(combo)], out_dir)
            row.update({col: result.get(col) for col in RESULT_COLUMNS})
            row["status"] = row["status"] or "finished"
        except Exception as err:  # one bad run (OOM, NaN, a bug in a reward) must not end the sweep
            (out_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            row.update({col: None for col in RESULT_COLUMNS}, status=f"failed: {type(err).__name__}: {err}")
        except KeyboardInterrupt:
            row.update({col: None for col in RESULT_COLUMNS}, status="interrupted")
            rows.append(row)
            write_results(rows, keys, sweep_dir)
            raise
        if row["seconds"] is None:
            row["seconds"] = round(time.time() - start, 1)
        row["run_dir"] = str(row["run_dir"] or out_dir)
        rows.append(row)
        write_results(rows, keys, sweep_dir)
        if on_result:
            on_result(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return re.sub(r"\s+", " ", str(value)).replace("|", "\\|")[:200]


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [r for r in rows if isinstance(r.get("best_accuracy"), (int, float))]
    return max(scored, key=lambda r: r["best_accuracy"]) if scored else None


def results_markdown(rows: list[dict[str, Any]], keys: list[str]) -> str:
    columns = [*keys, "best eval accuracy", "best step", "final reward", "time (s)", "status", "run dir"]
    fields = [*keys, "best_accuracy", "best_step", "final_reward", "seconds", "status", "run_dir"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(f)) for f in fields) + " |" for row in rows]
    best = best_row(rows)
    if best:
        where = ", ".join(f"{k}={best[k]}" for k in keys)
        lines += ["", f"Best: {where} (eval accuracy {_cell(best['best_accuracy'])})"]
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict[str, Any]], keys: list[str], sweep_dir: Path) -> None:
    (sweep_dir / "results.md").write_text(results_markdown(rows, keys), encoding="utf-8")
    with open(sweep_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*keys, *RESULT_COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
