"""report.html: one self-contained page per run (or an overlay of several) built from the run files.

Inputs are only the files a run directory always has (metrics.jsonl, samples.jsonl, config.yaml,
status.json), so a report can be made for a crashed run, an old run, or a run copied off a cluster.
Plots are matplotlib PNGs embedded as base64 and the CSS is inline: the page needs no network and
no JavaScript. Every section degrades to "not logged" when its metrics are missing.

    write_report(Path("outputs/grpo/2025-01-01_12-00-00"))          # -> <run>/report.html
    write_comparison([run_a, run_b], Path("compare.html"))            # curves of both runs overlaid
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from grpolab.observe.files import CONFIG_FILE, METRICS_FILE, SAMPLES_FILE, read_jsonl, read_status

REPORT_FILE = "report.html"
SAMPLES_SHOWN = 5  # best and worst samples in the table, each
_PASS_RE = re.compile(r"^eval/pass@(\d+)$")

Series = tuple[list[int], list[float]]


@dataclass
class RunData:
    run_dir: Path
    by_step: dict[int, dict[str, float]]  # step -> metrics; a step logged twice (resume): last wins
    samples: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""

    @property
    def label(self) -> str:
        return f"{self.run_dir.parent.name}/{self.run_dir.name}"

    def metric_keys(self) -> set[str]:
        return {key for metrics in self.by_step.values() for key in metrics}

    def series(self, key: str) -> Series:
        steps, values = [], []
        for step in sorted(self.by_step):
            value = self.by_step[step].get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                steps.append(step)
                values.append(float(value))
        return steps, values

    def last(self, key: str) -> float | None:
        values = self.series(key)[1]
        return values[-1] if values else None

    def best_eval(self) -> tuple[int, float] | None:
        """(step, accuracy) of the best evaluation: status.json's record if there, else the max."""
        steps, values = self.series("eval/accuracy")
        best_step = self.status.get("best_step")
        if best_step in steps:
            return best_step, values[steps.index(best_step)]
        if not values:
            return None
        i = max(range(len(values)), key=lambda j: (values[j], -steps[j]))  # first step of the max
        return steps[i], values[i]


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    by_step: dict[int, dict[str, float]] = {}
    for record in read_jsonl(run_dir / METRICS_FILE):
        step = record.pop("step", None)
        record.pop("time", None)
        if isinstance(step, int):
            by_step.setdefault(step, {}).update(record)
    config = run_dir / CONFIG_FILE
    return RunData(
        run_dir=run_dir,
        by_step=by_step,
        samples=list(read_jsonl(run_dir / SAMPLES_FILE)),
        status=read_status(run_dir),
        config_text=config.read_text(encoding="utf-8") if config.is_file() else "",
    )


# --- plots ----------------------------------------------------------------------------------------


def _smooth(values: list[float]) -> list[float]:
    """Trailing moving average over ~5% of the points: RL reward curves are too noisy to read raw."""
    window = max(1, len(values) // 20)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot(lines: dict[str, Series], title: str, ylabel: str, best: tuple[int, float] | None = None) -> str | None:
    """One line per label (smoothed when long) as a base64 PNG; None when nothing was logged."""
    lines = {label: xy for label, xy in lines.items() if xy[0]}
    if not lines:
        return None
    fig = Figure(figsize=(6.4, 3.4), dpi=100, layout="constrained")  # no pyplot: no global state
    ax = fig.subplots()
    for label, (steps, values) in lines.items():
        if len(values) >= 20:
            (raw,) = ax.plot(steps, values, alpha=0.25, linewidth=1)
            ax.plot(steps, _smooth(values), color=raw.get_color(), linewidth=1.8, label=label)
        else:
            ax.plot(steps, values, marker="o" if len(values) < 30 else None, markersize=3, label=label)
    if best is not None:
        ax.axvline(best[0], color="tab:green", linestyle="--", linewidth=1)
        ax.plot([best[0]], [best[1]], marker="*", markersize=14, color="tab:green", linestyle="none")
        ax.annotate(f"best {best[1]:.3g} @ {best[0]}", best, xytext=(6, 6), textcoords="offset points")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(png: str | None, title: str, what: str) -> str:
    if png is None:
        return f'<div class="plot missing"><h3>{_e(title)}</h3><p>not logged ({_e(what)})</p></div>'
    return f'<div class="plot"><img alt="{_e(title)}" src="data:image/png;base64,{png}"></div>'


# --- sections -------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else _e(value)


def _table(header: list[str] | None, rows: Iterable[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller); the header is plain text."""
    head = "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{head}<tbody>{body}</tbody></table>'


def _plots(run: RunData) -> str:
    keys = run.metric_keys()
    fns = sorted(k for k in keys if k.startswith("rewards/") and k.endswith("/mean"))
    evals = ["eval/accuracy", *sorted((k for k in keys if _PASS_RE.match(k)), key=lambda k: int(k[10:]))]
    evals += ["eval/format"] if "eval/format" in keys else []
    figures = [
        _figure(plot({"reward": run.series("reward")}, "reward", "mean reward"), "reward", "reward"),
        _figure(
            plot({k.split("/")[1]: run.series(k) for k in fns}, "reward per function", "mean"),
            "reward per function",
            "rewards/<fn>/mean",
        ),
        _figure(
            plot({k[5:]: run.series(k) for k in evals}, "evaluation", "rate", best=run.best_eval()),
            "evaluation",
            "eval/accuracy, eval/pass@k",
        ),
        _figure(plot({"kl": run.series("kl")}, "KL to reference", "kl"), "KL", "kl"),
        _figure(plot({"entropy": run.series("entropy")}, "entropy", "nats/token"), "entropy", "entropy"),
        _figure(
            plot({"mean length": run.series("completions/mean_length")}, "completion length", "tokens"),
            "completion length",
            "completions/mean_length",
        ),
        _figure(
            plot({"frac": run.series("frac_reward_zero_std")}, "groups with zero reward std", "fraction"),
            "frac_reward_zero_std",
            "frac_reward_zero_std",
        ),
    ]
    return '<h2>Curves</h2><div class="grid">' + "".join(figures) + "</div>"


def _categories(run: RunData) -> str:
    """Accuracy per category: the first and the last evaluation, and any final split (test/...)."""
    keys = run.metric_keys()
    per_prefix: dict[str, dict[str, Series]] = {}
    for key in keys:
        # `<prefix>/<category>/accuracy` where `<prefix>/accuracy` is the headline of the same
        # evaluation: so `final/test/add/accuracy` is category add of `final/test`, and
        # `final/test/accuracy` is no category of `final`.
        prefix, _, category = key.removesuffix("/accuracy").rpartition("/")
        if key.endswith("/accuracy") and prefix and f"{prefix}/accuracy" in keys:
            per_prefix.setdefault(prefix, {})[category] = run.series(key)
    if not per_prefix:
        return "<h2>Accuracy by category</h2><p class='missing'>not logged (eval/&lt;category&gt;/accuracy)</p>"
    cats = sorted({cat for table in per_prefix.values() for cat in table})
    header, columns = ["category"], []
    for prefix in sorted(per_prefix, key=lambda p: (p != "eval", p)):
        table = per_prefix[prefix]
        steps = sorted({s for xs, _ in table.values() for s in xs})
        picks = steps[-1:]
        if prefix == "eval":  # the baseline, the best checkpoint's evaluation, the latest one
            best = run.best_eval()
            picks = sorted({steps[0], steps[-1], *([best[0]] if best and best[0] in steps else [])})
        for step in picks:
            header.append(f"{prefix} @ step {step}")
            columns.append({c: dict(zip(*table[c])).get(step) for c in table})
    rows = [[_e(cat)] + [_num(col.get(cat)) for col in columns] for cat in cats]
    return "<h2>Accuracy by category</h2>" + _table(header, rows, "cats")


def _sample_text(record: dict[str, Any]) -> str:
    if record.get("spans"):  # agent run: what the model was trained on vs what the env wrote
        return "".join(
            f'<span class="{"trained" if s.get("trained") else "env"}">{_e(s.get("text", ""))}</span>'
            for s in record["spans"]
        )
    if record.get("messages"):
        return "\n".join(f"<b>{_e(m.get('role'))}</b>: {_e(m.get('content'))}" for m in record["messages"])
    return _e(record.get("completion", ""))


def _samples(run: RunData) -> str:
    scored = [s for s in run.samples if isinstance(s.get("reward"), (int, float))]
    if not scored:
        return "<h2>Sample completions</h2><p class='missing'>not logged (samples.jsonl)</p>"
    # Ties (many samples share the top reward) go to the latest step: what the model does now.
    shown = min(SAMPLES_SHOWN, (len(scored) + 1) // 2)  # few samples: split them, best half first
    best = sorted(scored, key=lambda s: (-s["reward"], -s.get("step", 0)))[:shown]
    rest = [s for s in scored if not any(s is b for b in best)]
    worst = sorted(rest, key=lambda s: (s["reward"], -s.get("step", 0)))[:SAMPLES_SHOWN]
    rows = []
    for kind, group in (("best", best), ("worst", worst)):
        for s in group:
            rewards = ", ".join(f"{_e(k)}={_num(v)}" for k, v in (s.get("rewards") or {}).items())
            rows.append(
                [
                    kind,
                    _num(s.get("step")),
                    _e(s.get("category", "")),
                    f"<b>{_num(s['reward'])}</b><br><small>{rewards}</small>",
                    _num(s.get("advantage")),
                    _e(s.get("answer", "")),
                    f"<pre>{_e(s.get('prompt', ''))}</pre>",
                    f"<pre>{_sample_text(s)}</pre>",
                ]
            )
    header = ["", "step", "category", "reward", "advantage", "answer", "prompt", "completion"]
    legend = (
        '<p class="legend"><span class="trained">trained (model tokens)</span> '
        '<span class="env">not trained (tool / environment)</span></p>'
        if any(s.get("spans") for s in scored)
        else ""
    )
    return "<h2>Sample completions</h2>" + legend + _table(header, rows, "samples")


def _summary(run: RunData) -> str:
    s = run.status
    best = run.best_eval()
    rows = [
        ["status", _e(s.get("status", "unknown"))],
        ["steps", f"{_num(s.get('step'))} / {_num(s.get('total_steps'))}"],
        ["best accuracy", f"{best[1]:.4g} at step {best[0]}" if best else "not logged"],
        ["final reward", _num(run.last("reward"))],
        ["why stopped", _e(s.get("stop_reason") or "-")],
        ["run directory", _e(run.run_dir)],
    ]
    # The final split before training and on the exported model (status.json from the trainer).
    before, after = s.get("before") or {}, s.get("after") or {}
    for key in after or before:
        if key.count("/") <= 1 and isinstance(after.get(key, before.get(key)), (int, float)):
            rows.append([f"{_e(key)} before &rarr; after", f"{_num(before.get(key))} &rarr; {_num(after.get(key))}"])
    return _table(None, rows, "summary")


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;
text-align:left}th{background:#f3f3f3}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
.plot{border:1px solid #eee;padding:4px}.plot img{width:100%;display:block}
.missing{color:#888;font-style:italic}div.missing{padding:8px}
pre{white-space:pre-wrap;margin:0;max-width:520px;font-size:12px}
.trained{background:#d4f7d4}.env{background:#eee;color:#666}.summary td:first-child{font-weight:bold}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>\n"
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write `<run_dir>/report.html` (or `out`) and return its path."""
    run = load_run(run_dir)
    if not run.run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    config = "<h2>Config</h2>" + (
        f"<details><summary>config.yaml</summary><pre>{_e(run.config_text)}</pre></details>"
        if run.config_text
        else "<p class='missing'>not logged (config.yaml)</p>"
    )
    body = _summary(run) + _plots(run) + _categories(run) + _samples(run) + config
    out = Path(out) if out else run.run_dir / REPORT_FILE
    out.write_text(_page(f"grpolab run {run.label}", body), encoding="utf-8")
    return out


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    """Overlay several runs: reward, eval accuracy, KL and completion length, plus a summary table."""
    runs = [load_run(d) for d in run_dirs]
    labels = [run.label for run in runs]
    if len(set(labels)) < len(labels):  # same names from different output roots: use full paths
        labels = [str(run.run_dir) for run in runs]
    figures = []
    for key, title in (
        ("reward", "reward"),
        ("eval/accuracy", "eval accuracy"),
        ("kl", "KL"),
        ("completions/mean_length", "completion length"),
    ):
        png = plot({label: run.series(key) for label, run in zip(labels, runs)}, title, key)
        figures.append(_figure(png, title, key))
    rows = []
    for label, run in zip(labels, runs):
        best = run.best_eval()
        rows.append(
            [
                _e(label),
                _e(run.status.get("status", "unknown")),
                _num(run.status.get("step")),
                f"{best[1]:.4g}" if best else "-",
                str(best[0]) if best else "-",
                _num(run.last("reward")),
            ]
        )
    header = ["run", "status", "steps", "best accuracy", "best step", "final reward"]
    body = _table(header, rows, "summary") + '<h2>Curves</h2><div class="grid">' + "".join(figures) + "</div>"
    out = Path(out)
    out.write_text(_page(f"grpolab: {len(runs)} runs compared", body), encoding="utf-8")
    return out
