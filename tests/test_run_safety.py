"""Issue 22, items 1-5 and 8: runs never mix, a name never escapes the output folder, and a resume is
checked in full before anything is written or loaded. (Two real processes at once: test_chaos.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from grpolab.api import GRPOTrainer
from grpolab.cli.main import run_command
from grpolab.config.load import ConfigError
from grpolab.models.verify import ModelFilesError
from grpolab.observe.files import JsonlWriter
from grpolab.train.run_lock import RunBusyError, claim_new_run_dir
from run_helpers import QUICK, quick_config


def resume_config(out: Path, *extra: str):
    return quick_config(out, "train.max_steps=4", "train.resume=auto", *extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """An output folder holding one finished 2-step run (checkpoints/step-2 and best)."""
    out = tmp_path_factory.mktemp("finished")
    GRPOTrainer(args=quick_config(out, "train.max_steps=2")).train()
    return out


def copy_run(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(output folder, run directory): a private copy of the finished run."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    (run_dir,) = (p.parent for p in out.glob("*/*/status.json"))
    return out, run_dir


def snapshot(run_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


# --- item 1: two runs started in the same second never share a directory -----------------------------


def test_runs_claiming_one_timestamp_at_once_get_a_directory_each(tmp_path):
    claimed: list[Path] = []

    def claim() -> None:
        claimed.append(claim_new_run_dir(tmp_path / "grpo", "2026-01-01_00-00-00")[0])

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # mkdir is the claim: exactly one thread gets each name, the suffixes count 1..7
    stamp = "2026-01-01_00-00-00"
    assert sorted(p.name for p in claimed) == [stamp] + [f"{stamp}_{i}" for i in range(1, 8)]


# --- item 2: a resume of a run another process trains is refused, naming it --------------------------


def test_a_second_resume_of_a_live_run_is_refused_with_the_pid(finished, tmp_path):
    out, _ = copy_run(finished, tmp_path)
    live = GRPOTrainer(args=resume_config(out))  # holds the run until it ends (or is closed)
    with pytest.raises(RunBusyError, match=f"in use by pid {os.getpid()}"):
        GRPOTrainer(args=resume_config(out))
    live.trainer.run_lock.release()
    GRPOTrainer(args=resume_config(out)).trainer.run_lock.release()  # free again: accepted


def test_a_resume_that_fails_to_build_holds_no_lock(finished, tmp_path, monkeypatch):
    out, _ = copy_run(finished, tmp_path)

    def oom(*_args, **_kwargs):
        raise MemoryError("the model does not fit")

    with monkeypatch.context() as patch:
        patch.setattr("grpolab.train.placement.load_model", oom)
        with pytest.raises(MemoryError):
            GRPOTrainer(args=resume_config(out))
    GRPOTrainer(args=resume_config(out)).close()  # the retry in the same process is not refused


def test_the_command_line_refuses_a_run_locked_by_another_process(finished, tmp_path, capsys):
    out, run_dir = copy_run(finished, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from grpolab.train.run_lock import RunLock; "
         "lock = RunLock.acquire(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(run_dir)
        code = run_command(["train", *QUICK, f"train.output_dir={out}", "train.max_steps=4", "--resume"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert f"in use by pid {holder.pid}" in capsys.readouterr().err
    assert snapshot(run_dir) == before  # the live run's files untouched, nothing added


# --- item 3: a run name cannot leave the output folder -------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "a\\b", "'../x'"])
def test_a_run_name_with_a_separator_or_dotdot_is_a_config_error(tmp_path, name):
    with pytest.raises(ConfigError, match=r"train\.run_name: must be one folder name"):
        quick_config(tmp_path, f"train.run_name={name}")


# --- items 4 and 5: a damaged or impossible checkpoint is refused before the model loads -----------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set_step(ckpt: Path, step: int) -> None:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    (ckpt / "trainer_state.json").write_text(json.dumps({**state, "step": step}))


DAMAGE = {
    "garbage optimizer.pt": (lambda c: (c / "optimizer.pt").write_bytes(b"garbage" * 10), "optimizer.pt"),
    "truncated optimizer.pt": (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt"),
    "bad config.json": (lambda c: (c / "config.json").write_text("{not json"), "config.json"),
    "missing rng_state.pt": (lambda c: (c / "rng_state.pt").unlink(), "rng_state.pt is missing"),
    "missing scheduler.pt": (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    "trainer_state step 99 in step-2": (lambda c: _set_step(c, 99), "says step 99"),
    "trainer_state history not a list": (
        lambda c: (c / "trainer_state.json").write_text(
            json.dumps({**json.loads((c / "trainer_state.json").read_text()), "history": "x"})
        ),
        "'history' is 'x'",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_refused_and_the_run_left_byte_identical(finished, tmp_path, monkeypatch, damage):
    out, run_dir = copy_run(finished, tmp_path)
    harm, expected = DAMAGE[damage]
    harm(run_dir / "checkpoints" / "step-2")
    before = snapshot(run_dir)

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the checkpoint was checked")

    monkeypatch.setattr("grpolab.train.placement.load_model", no_model)
    with pytest.raises(ModelFilesError, match=expected.replace(".", r"\.")):
        GRPOTrainer(args=resume_config(out)).train()
    assert snapshot(run_dir) == before  # status.json still `finished 2/2`, nothing added


def test_a_checkpoint_beyond_max_steps_is_refused(finished, tmp_path):
    out, _ = copy_run(finished, tmp_path)
    with pytest.raises(ModelFilesError, match=r"at step 2, beyond train\.max_steps=1"):
        GRPOTrainer(args=quick_config(out, "train.max_steps=1", "train.resume=auto"))


@pytest.mark.parametrize(
    ("torn", "kept"),
    [
        ('{"step": 2, "lo', [1, 3]),  # cut mid-record: the fragment goes
        ('{"step": 2}', [1, 2, 3]),  # whole but unterminated: kept, then ended
    ],
)
def test_a_torn_last_jsonl_line_is_cut_or_ended_before_appending(tmp_path, torn, kept):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n' + torn)
    writer = JsonlWriter(path)
    writer.write({"step": 3})
    writer.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == kept


# --- item 8: a bare --resume that finds nothing stops and says what it looked for ------------------------


def test_a_bare_resume_with_nothing_to_resume_stops(tmp_path, capsys):
    (tmp_path / "other" / "2026-01-01_00-00-00" / "checkpoints" / "step-3").mkdir(parents=True)
    code = run_command(["train", *QUICK, f"train.output_dir={tmp_path}", "--resume"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"no checkpoint of run 'default' in {tmp_path / 'default'}/*/checkpoints" in err
    assert "run names with checkpoints there: other" in err
    assert not (tmp_path / "default").exists()  # no fresh run was started
