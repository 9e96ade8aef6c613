"""What a person watching the terminal sees: a progress bar, eval tables, samples, a final summary.

Everything goes to stderr (one stream, so the bar and the messages never interleave badly, and
stdout stays free for commands whose output is data, e.g. `grpolab eval --json`). On a terminal the
bar redraws in place; without one (CI logs, `> file`) a compact status line is printed about every
5% of the run instead, because a redrawn bar would be thousands of lines of noise. Quiet mode
prints only warnings and the final summary. The same text, minus the bar, goes to train.log.
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from grpolab.observe.files import TextLog
from grpolab.observe.sinks import clip_text

SAMPLE_LIMIT = 1500  # characters of a completion printed in verbose mode


def fmt(value: Any) -> str:
    """A metric for humans: 4 significant digits, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ConsoleView:
    def __init__(self, log: TextLog, *, total_steps: int, quiet: bool, file: IO[str] | None = None) -> None:
        self.log = log
        self.quiet = quiet
        self.total = max(1, total_steps)
        self.console = Console(file=file, stderr=file is None, highlight=False)
        self.fields: dict[str, float | None] = {"reward": None, "acc": None, "kl": None}
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._history: deque[tuple[float, int]] = deque(maxlen=50)  # (time, step) for steps/s
        self._line_every = max(1, self.total // 20)

    # --- messages ---------------------------------------------------------------------------------

    def print(self, renderable: RenderableType, *, always: bool = False) -> None:
        """To the console (unless quiet, or `always`) and to train.log."""
        if always or not self.quiet:
            self.console.print(renderable)
        self.log.render(renderable)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(Text(message))
        self.log.line("INFO", message)

    def warning(self, message: str) -> None:
        self.console.print(Text("warning: ", style="bold yellow") + Text(message))
        self.log.line("WARNING", message)

    # --- progress ---------------------------------------------------------------------------------

    def rate(self) -> float | None:
        if len(self._history) < 2:
            return None
        (t0, s0), (t1, s1) = self._history[0], self._history[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    def stats(self, step: int) -> tuple[str, str]:
        rate = self.rate()
        eta = fmt_duration((self.total - step) / rate) if rate else "?"
        parts = [f"{name} {fmt(value)}" for name, value in self.fields.items() if value is not None]
        if rate:
            parts.append(f"{rate:.2f} step/s" if rate < 10 else f"{rate:.0f} step/s")
        return eta, " · ".join(parts)

    def advance(self, step: int) -> None:
        self._history.append((time.monotonic(), step))
        eta, stats = self.stats(step)
        if step % self._line_every == 0 or step >= self.total:
            # The text form of the bar: train.log always, the console when there is no live bar.
            line = f"step {step}/{self.total} · ETA {eta}" + (f" · {stats}" if stats else "")
            self.log.line("INFO", line)
            if not self.quiet and not self.console.is_terminal:
                self.console.print(Text(line))
        if self.quiet or not self.console.is_terminal:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]step"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total, completed=step, eta=eta, stats=stats)
        assert self._task is not None
        self._progress.update(self._task, completed=step, eta=eta, stats=stats)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # --- tables -----------------------------------------------------------------------------------

    def eval_table(self, metrics: dict[str, float], step: int, title: str) -> None:
        title = title if "step" in title else f"{title} · step {step}"
        headline = Table(title=title, title_justify="left", show_header=False)
        headline.add_column("metric")
        headline.add_column("value", justify="right")
        categories = Table(show_header=True, title_justify="left")
        categories.add_column("category")
        categories.add_column("accuracy", justify="right")
        for key, value in metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == "accuracy" and parts[1] != "rewards":
                categories.add_row(parts[1], fmt(value))
            else:
                headline.add_row("/".join(parts[1:]) or key, fmt(value))
        self.print(Group(headline, categories) if categories.row_count else headline)

    def samples(self, records: list[dict[str, Any]], step: int) -> None:
        """Verbose mode: each sample as a panel; agent spans the model was trained on in green."""
        for record in records:
            body = Text()
            if record.get("prompt"):
                body.append(clip_text(record["prompt"], 300) + "\n", style="dim")
            if record.get("spans"):
                for span in record["spans"]:
                    style = "green" if span.get("trained") else "dim"
                    body.append(clip_text(span.get("text", ""), SAMPLE_LIMIT), style=style)
            elif record.get("messages"):
                for message in record["messages"]:
                    body.append(f"[{message.get('role', '?')}] ", style="bold")
                    body.append(clip_text(message.get("content", ""), SAMPLE_LIMIT) + "\n")
            else:
                body.append(clip_text(record.get("completion", ""), SAMPLE_LIMIT))
            rewards = record.get("rewards") or {}
            subtitle = " ".join(f"{name}={fmt(value)}" for name, value in rewards.items())
            if record.get("answer") is not None:
                subtitle += f" · answer {record['answer']}"
            title = f"step {step} · reward {fmt(record.get('reward'))} · adv {fmt(record.get('advantage'))}"
            if record.get("category"):
                title += f" · {record['category']}"
            self.print(Panel(body, title=title, subtitle=subtitle or None, title_align="left"))

    def summary(self, rows: list[tuple[str, str]]) -> None:
        table = Table(title="run summary", title_justify="left", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value", overflow="fold")  # paths must stay whole to be copied
        for name, value in rows:
            table.add_row(name, value)
        self.print(table, always=True)


class Working:
    """One line for a slow step that has no progress bar of its own (model load, conversion, an
    evaluation): a spinner that redraws on a terminal, plain lines without one; `update` changes the
    text (`evaluating test: 32/200 questions`). Silent when quiet, and on every rank but the first."""

    _active: Working | None = None  # one live line at a time: a nested step (conversion inside a load) updates it

    def __init__(self, message: str, *, quiet: bool = False, file: IO[str] | None = None) -> None:
        import os

        self.message = message
        self.silent = quiet or os.environ.get("RANK", "0") != "0"
        self.outer: Working | None = None
        self.console = Console(file=file, stderr=file is None, highlight=False)
        self._status: Any = None
        self._started = time.monotonic()
        self._last_line = self._started

    def __enter__(self) -> Working:
        if self.silent:
            return self
        self.outer, Working._active = Working._active, self
        if self.outer is not None and self.outer._status is not None:
            self._status = self.outer._status
            self._status.update(self.message)
        elif self.console.is_terminal:
            self._status = self.console.status(self.message)
            self._status.start()
        else:
            self.console.print(Text(f"{self.message} ..."))
        return self

    def update(self, text: str) -> None:
        if self.silent:
            return
        if self._status is not None:
            self._status.update(f"{self.message}: {text}")
        elif time.monotonic() - self._last_line >= 30:  # a log file: a line every 30 s at most
            self._last_line = time.monotonic()
            self.console.print(Text(f"{self.message}: {text}"))

    def __exit__(self, *exc: object) -> None:
        if self.silent:
            return
        Working._active = self.outer
        borrowed = self.outer is not None and self._status is self.outer._status
        if self._status is not None and borrowed:
            self._status.update(self.outer.message)  # type: ignore[union-attr]
        elif self._status is not None:
            self._status.stop()
        if exc[0] is None:
            self.console.print(Text(f"{self.message}: done in {fmt_duration(time.monotonic() - self._started)}"))
