"""Every error a user can fix derives from grpolab.errors.UserError; `grpolab` prints it as one line
(`error: <message>`) with its exit code, and lets any other exception through with its traceback."""

from __future__ import annotations

import importlib

import pytest

from grpolab.config.load import ConfigError
from grpolab.data.base import DataError
from grpolab.errors import UserError
from grpolab.models.loading import ModelLoadError
from grpolab.models.verify import ModelFilesError
from grpolab.rewards.api import RewardError
from grpolab.train.atomic import DiskFullError
from grpolab.train.export import ExportError
from grpolab.train.health import UnscoredRunError
from grpolab.train.preflight import PreflightError
from grpolab.train.resume import ResumeError
from grpolab.train.run_lock import RunBusyError

cli = importlib.import_module("grpolab.cli.main")  # grpolab.cli's `main` is the function

# (class, the builtin it was before UserError existed: `except ValueError` callers still catch it)
USER_ERRORS = [
    (ConfigError, ValueError),
    (DataError, ValueError),
    (ModelLoadError, RuntimeError),
    (ModelFilesError, ValueError),
    (RewardError, RuntimeError),
    (DiskFullError, OSError),
    (ResumeError, ValueError),
    (ExportError, ValueError),
    (UnscoredRunError, RuntimeError),
    (PreflightError, RuntimeError),
    (RunBusyError, RuntimeError),
]


@pytest.mark.parametrize(("cls", "builtin"), USER_ERRORS)
def test_each_user_error_is_one_and_keeps_its_builtin_base(cls, builtin):
    assert issubclass(cls, UserError) and issubclass(cls, builtin)


def test_disk_full_keeps_the_errno():
    err = DiskFullError(28, "no space left")
    assert err.errno == 28 and isinstance(err, UserError)


@pytest.mark.parametrize(
    ("raised", "code"),
    [(ConfigError("optim.lr: must be > 0"), 2), (RunBusyError("run held by pid 7"), 1), (FileExistsError("out"), 1)],
)
def test_the_cli_prints_a_user_error_as_one_line_with_its_exit_code(monkeypatch, capsys, raised, code):
    def command(args):
        raise raised

    monkeypatch.setattr(cli, "cmd_make_tiny", command)
    assert cli.main(["make-tiny-model"]) == code
    assert capsys.readouterr().err == f"error: {raised}\n"


def test_the_cli_lets_a_bug_through_with_its_traceback(monkeypatch):
    def command(args):
        raise KeyError("a bug, not the user's")

    monkeypatch.setattr(cli, "cmd_make_tiny", command)
    with pytest.raises(KeyError):
        cli.main(["make-tiny-model"])
