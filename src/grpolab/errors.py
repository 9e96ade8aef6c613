"""The one base class of the errors a user can fix from their side (a config key, a data file, a model
directory, a full disk). Its message is the whole story, one line: `grpolab` prints `error: <message>`
without a traceback and exits with `exit_code`. Imports nothing, so every layer can subclass it."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; str(err) is the one line to show them."""

    exit_code = 1
