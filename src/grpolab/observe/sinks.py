"""Optional sinks: TensorBoard and Weights & Biases.

Both follow one rule: an observability backend must never kill a training run. Any error (missing
package, failed login, network, a bad value) is reported ONCE through `warn` and the sink turns
itself off; metrics.jsonl and train.log keep going.

Both also name metrics the way a TRL run's TensorBoard and W&B do (transformers' `rewrite_logs`),
so a dashboard built on TRL runs shows grpolab runs unchanged: training metrics under `train/`
(`train/reward`, `train/rewards/numeric/mean`, `train/num_tokens`, `train/epoch`), evaluations
under `eval/` as they already are; W&B also gets TRL's x-axis `train/global_step`. metrics.jsonl
keeps the bare names (`reward`, `eval/accuracy`): it is ours, and report.html, `grpolab runs` and
sweeps read it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpolab.config.load import redact
from grpolab.config.schema import Config

Warn = Callable[[str], None]
TEXT_LIMIT = 2000  # characters of a prompt/completion shown in TensorBoard / W&B tables


def clip_text(text: Any, limit: int = TEXT_LIMIT) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + f"… (+{len(text) - limit} chars)"


def record_text(record: dict[str, Any]) -> str:
    """The completion of a sample, or its whole conversation for agent runs (spans or messages)."""
    if record.get("spans"):
        return "".join(str(span.get("text", "")) for span in record["spans"])
    if record.get("messages"):
        return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in record["messages"])
    return str(record.get("completion", ""))


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue  # a string or None has no scalar plot
    return out


# Keys in these namespaces are evaluations and keep their names; every other key is a training
# metric. (`final/` is the exported model's evaluation on the final split, at the end of a run.)
EVALUATION_PREFIXES = ("eval/", "test/", "final/")


def dashboard_key(key: str) -> str:
    """The TensorBoard / W&B name of a metric: TRL's `train/` prefix for training metrics.

    >>> [dashboard_key(k) for k in ("reward", "rewards/numeric/mean", "eval/accuracy", "train/skipped_empty")]
    ['train/reward', 'train/rewards/numeric/mean', 'eval/accuracy', 'train/skipped_empty']
    """
    return key if key.startswith(("train/", *EVALUATION_PREFIXES)) else f"train/{key}"


def dashboard_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {dashboard_key(key): value for key, value in _numbers(metrics).items()}


class _Sink:
    name = "sink"

    def __init__(self, warn: Warn) -> None:
        self._warn = warn
        self.active = False

    def _fail(self, what: str, err: BaseException) -> None:
        if self.active:
            self._warn(f"{self.name}: {what} failed ({type(err).__name__}: {err}); going on without it")
        self.active = False


class TensorBoardSink(_Sink):
    """Scalars for every metric, and the samples as a markdown text summary per logged step."""

    name = "TensorBoard"

    def __init__(self, log_dir: Path, warn: Warn) -> None:
        super().__init__(warn)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))
            self.active = True
        except Exception as err:
            warn(f"TensorBoard disabled ({type(err).__name__}: {err}); metrics.jsonl still has everything")

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        if not self.active:
            return
        try:
            for key, value in dashboard_metrics(metrics).items():
                self._writer.add_scalar(key, value, step)
        except Exception as err:
            self._fail("writing scalars", err)

    def log_samples(self, records: list[dict[str, Any]], step: int) -> None:
        if not self.active or not records:
            return
        blocks = []
        for record in records:
            head = " · ".join(
                f"**{key}** {_short(record.get(key))}"
                for key in ("reward", "advantage", "answer", "category")
                if record.get(key) is not None
            )
            # Indented code block: TensorBoard's markdown keeps whitespace and escapes nothing inside.
            body = "\n".join("    " + line for line in clip_text(record_text(record)).splitlines())
            blocks.append(f"{head}\n\n{body}")
        try:
            self._writer.add_text("samples", "\n\n---\n\n".join(blocks), step)
        except Exception as err:
            self._fail("writing samples", err)

    def close(self) -> None:
        if self.active:
            try:
                self._writer.close()
            except Exception as err:
                self._fail("closing", err)
        self.active = False


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class WandbSink(_Sink):
    """Weights & Biases. `WANDB_MODE=offline|disabled` and `WANDB_DIR` are read by wandb itself."""

    name = "W&B"

    def __init__(self, cfg: Config, run_dir: Path, warn: Warn, resume_id: str | None = None) -> None:
        super().__init__(warn)
        self._run: Any = None
        try:
            import wandb
        except ImportError:
            warn("logging.wandb=true but wandb is not installed (pip install 'grpolab[wandb]'); going on")
            return
        self._wandb = wandb
        log = cfg.logging
        try:
            self._run = wandb.init(
                project=log.wandb_project,
                entity=log.wandb_entity,
                name=log.wandb_run_name or cfg.journal.exp_name or f"{run_dir.parent.name}-{run_dir.name}",
                tags=list(dict.fromkeys([*log.wandb_tags, *cfg.journal.tags])) or None,
                notes=cfg.journal.hypothesis,  # the journal's hypothesis, beside the run on the dashboard
                config=redact(cfg.model_dump(mode="json")),
                # Default into the run directory so a run's files stay together; WANDB_DIR wins.
                dir=None if os.environ.get("WANDB_DIR") else str(run_dir),
                id=resume_id,
                resume="allow" if resume_id else None,
                reinit="create_new",
                # console="off": wandb must not wrap our stdout/stderr (the rich progress bar);
                # login_timeout: an interactive login prompt must not stall training forever.
                settings=wandb.Settings(console="off", login_timeout=30),
            )
            self.active = self._run is not None
        except Exception as err:
            warn(f"W&B init failed ({type(err).__name__}: {err}); going on without W&B")

    @property
    def run_id(self) -> str | None:
        return getattr(self._run, "id", None) if self.active else None

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        if not self.active:
            return
        try:
            self._run.log({**dashboard_metrics(metrics), "train/global_step": step}, step=step)
        except Exception as err:
            self._fail("log", err)

    def log_samples(self, records: list[dict[str, Any]], step: int) -> None:
        if not self.active or not records:
            return
        columns: list[Any] = ["step", "category", "prompt", "completion", "reward", "advantage", "answer"]
        rows = [
            [
                step,
                str(r.get("category", "")),
                clip_text(r.get("prompt", "")),
                clip_text(record_text(r)),
                _finite(r.get("reward")),
                _finite(r.get("advantage")),
                str(r.get("answer", "")),
            ]
            for r in records
        ]
        try:
            self._run.log({"samples": self._wandb.Table(columns=columns, data=rows)}, step=step)
        except Exception as err:
            self._fail("logging samples", err)

    def close(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        if not self.active:
            return
        try:
            for key, value in summary.items():
                if isinstance(value, (int, float, str)):
                    self._run.summary[key] = value
            self._run.finish(exit_code=exit_code)
        except Exception as err:
            self._fail("finish", err)
        self.active = False


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
