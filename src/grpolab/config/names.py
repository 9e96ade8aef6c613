"""Config values that become file names, checked where the config is validated: a bad one is one line
at load time, never a path outside `train.output_dir`."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def one_folder_name(name: str) -> str:
    """`train.run_name` becomes `output_dir/<name>/<timestamp>`: a separator or `..` (`../../escaped`)
    would write elsewhere, so it must be one plain folder name."""
    if not name.strip() or "/" in name or "\\" in name or ".." in name:
        raise ValueError("must be one folder name (no '/', '\\' or '..')")
    return name


FolderName = Annotated[str, AfterValidator(one_folder_name)]
