"""`Tracker`: the trainer's one handle on every place a run is observed.

    tracker = Tracker(run_dir, cfg, total_steps=cfg.train.max_steps)
    with tracker:                                   # an exception marks the run crashed/interrupted
        tracker.log_metrics({"reward": 0.4, "kl": 0.01}, step)
        tracker.advance(step)
        tracker.log_eval(result.metrics(), step, title="eval")
        tracker.set_status("stopped_early", stop_reason="no improvement for 5 evals")
        tracker.close({"best_accuracy": 0.62, "best_step": 90})

Sinks: console (rich), train.log, metrics.jsonl, samples.jsonl, status.json, config.yaml, and when
configured TensorBoard and W&B. The files are the source of truth (report.html and `grpolab runs`
read them); the optional sinks warn once and switch off when they fail.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from grpolab.config.load import config_to_yaml, redact_text
from grpolab.config.schema import Config
from grpolab.observe.console import ConsoleView, fmt, fmt_duration
from grpolab.observe.files import (
    CONFIG_FILE,
    LOG_FILE,
    METRICS_FILE,
    SAMPLES_FILE,
    STATUSES,
    JsonlWriter,
    TextLog,
    read_status,
    write_status,
)
from grpolab.observe.sinks import TensorBoardSink, WandbSink

STATUS_REFRESH_S = 30.0  # how often advance() rewrites status.json (a heartbeat for `grpolab runs`)


class _WarningsToTracker(logging.Handler):
    """Routes WARNING+ records of the `grpolab` loggers (reward errors, judge retries) into the
    tracker, so they reach train.log and are not lost under the progress bar."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__(level=logging.WARNING)
        self._tracker = tracker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # redacted for the console too (train.log redacts every line): a library's message can quote
            # a server's reply, and a server can echo the key it was sent
            self._tracker.warning(redact_text(f"{record.name}: {record.getMessage()}"))
        except Exception:
            self.handleError(record)


class Tracker:
    def __init__(self, run_dir: Path, cfg: Config, *, total_steps: int, console_file: IO[str] | None = None) -> None:
        """`console_file` replaces stderr (tests); everything else comes from `cfg.logging`."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.total_steps = total_steps
        self._closed = False
        (self.run_dir / CONFIG_FILE).write_text(config_to_yaml(cfg), encoding="utf-8")
        self._log = TextLog(self.run_dir / LOG_FILE)
        self._metrics = JsonlWriter(self.run_dir / METRICS_FILE)
        self._samples = JsonlWriter(self.run_dir / SAMPLES_FILE)
        self.view = ConsoleView(self._log, total_steps=total_steps, quiet=cfg.logging.quiet, file=console_file)

        previous = read_status(self.run_dir)  # a resumed run keeps its start time, best and W&B id
        self._status: dict[str, Any] = {
            "status": "running",
            "step": previous.get("step", 0),
            "total_steps": total_steps,
            "best_accuracy": previous.get("best_accuracy"),
            "best_step": previous.get("best_step"),
            "stop_reason": None,
            "name": cfg.train.run_name,
            "run_dir": str(self.run_dir),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": previous.get("started", time.time()),
        }
        self._status_written = 0.0

        self._tb: TensorBoardSink | None = None
        if cfg.logging.tensorboard:
            self._tb = TensorBoardSink(self.run_dir / "tensorboard", self.warning)
        self._wandb: WandbSink | None = None
        if cfg.logging.wandb:
            self._wandb = WandbSink(cfg, self.run_dir, self.warning, resume_id=previous.get("wandb_id"))
            if self._wandb.run_id:
                self._status["wandb_id"] = self._wandb.run_id
        self._write_status()
        self._handler = _WarningsToTracker(self)
        logging.getLogger("grpolab").addHandler(self._handler)
        wandb_id = self._status.get("wandb_id")  # the run id the journal entry will carry too
        self._log.line(
            "INFO",
            f"run directory {self.run_dir} ({total_steps} steps)" + (f"; W&B run id {wandb_id}" if wandb_id else ""),
        )

    # --- metrics and samples ----------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._metrics.write({"step": step, "time": time.time(), **metrics})
        if self._tb:
            self._tb.log_metrics(metrics, step)
        if self._wandb:
            self._wandb.log_metrics(metrics, step)
        for field, key in (("reward", "reward"), ("kl", "kl"), ("acc", "eval/accuracy")):
            if metrics.get(key) is not None:
                self.view.fields[field] = float(metrics[key])

    def log_samples(self, records: list[dict[str, Any]], step: int) -> None:
        for record in records:
            self._samples.write({"step": step, **record})
        if self._tb:
            self._tb.log_samples(records, step)
        if self._wandb:
            self._wandb.log_samples(records, step)
        if self.cfg.logging.verbose:
            self.view.samples(records, step)

    def log_eval(self, metrics: dict[str, float], step: int, title: str) -> None:
        self.view.eval_table(metrics, step, title)
        self.log_metrics(metrics, step)

    # --- console ----------------------------------------------------------------------------------

    def advance(self, step: int) -> None:
        self.view.advance(step)
        self._status["step"] = step
        if time.time() - self._status_written > STATUS_REFRESH_S:
            self._write_status()

    def info(self, message: str) -> None:
        self.view.info(message)

    def warning(self, message: str) -> None:
        self.view.warning(message)

    # --- status and end of run --------------------------------------------------------------------

    def set_status(self, status: str, **fields: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)} (got {status!r})")
        self._status.update(fields, status=status)
        self._write_status()

    @property
    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def _write_status(self) -> None:
        self._status["updated"] = time.time()
        write_status(self.run_dir, self._status)
        self._status_written = self._status["updated"]

    def close(self, summary: dict[str, Any]) -> None:
        """Summary keys the table knows: status, stop_reason, steps, best_accuracy, best_step,
        final_reward, seconds; any other key is shown (and stored in status.json) as given."""
        if self._closed:
            return
        self._closed = True
        self.view.stop()
        summary = dict(summary)
        status = summary.pop("status", None) or self._status["status"]
        if status == "running":
            status = "finished"
        if "steps" in summary:
            self._status["step"] = summary["steps"]
        self.set_status(status, **summary)
        self._metrics.close()
        self._samples.close()
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.close(self._status, exit_code=1 if status in ("crashed", "interrupted") else 0)
        logging.getLogger("grpolab").removeHandler(self._handler)
        report = self._write_report()
        self.view.summary(self._summary_rows(report))
        self._log.close()

    def _write_report(self) -> Path | None:
        if not self.cfg.logging.report:
            return None
        try:
            from grpolab.observe.report import write_report

            return write_report(self.run_dir)
        except Exception as err:  # a plotting problem must not turn a finished run into a failure
            self.warning(f"report.html not written ({type(err).__name__}: {err})")
            return None

    def _summary_rows(self, report: Path | None) -> list[tuple[str, str]]:
        s = self._status
        rows = [("status", str(s["status"]))]
        if s.get("stop_reason"):
            rows.append(("why stopped", str(s["stop_reason"])))
        rows.append(("steps", f"{s.get('step')}/{self.total_steps}"))
        if s.get("best_accuracy") is not None:
            rows.append(("best accuracy", f"{fmt(s['best_accuracy'])} at step {s.get('best_step')}"))
        if s.get("final_reward") is not None:
            rows.append(("final reward", fmt(s["final_reward"])))
        if s.get("seconds") is not None:
            rows.append(("time", fmt_duration(s["seconds"])))
        # before/after: the final split evaluated before training and on the exported model.
        before, after = s.get("before") or {}, s.get("after") or {}
        for key in after or before:
            if key.count("/") <= 1:  # headline metrics; categories are in the report
                rows.append((key, f"{fmt(before.get(key))} -> {fmt(after.get(key))}"))
        known = {"status", "stop_reason", "step", "steps", "best_accuracy", "best_step", "final_reward"}
        known |= {"seconds", "total_steps", "name", "run_dir", "pid", "host", "started", "updated"}
        known |= {"wandb_id", "before", "after"}
        rows += [
            (key, fmt(value))
            for key, value in s.items()
            if key not in known and value not in (None, "", {}, []) and not isinstance(value, dict)
        ]
        rows.append(("outputs", str(self.run_dir)))
        if report is not None:
            rows.append(("report", str(report)))
        return rows

    # --- context manager: a crash still leaves a closed, labelled run -----------------------------

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close({})
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close({"status": "interrupted", "stop_reason": "interrupted (Ctrl-C)"})
        else:
            self.close({"status": "crashed", "stop_reason": f"{exc_type.__name__}: {exc}"})
