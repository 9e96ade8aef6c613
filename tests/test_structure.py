"""The tree's shape, checked (issue 23): imports only go down the pipeline's layers, no file over 400
lines, no function in train/ or algo/ over 60 lines.

The layers, low to high. A module may import from its own layer or a lower one, never a higher one,
not even lazily inside a function or under TYPE_CHECKING: an upward import is a cycle waiting to
happen and makes a lower layer impossible to read or test without the one above. The API and the
command line sit on top and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "grpolab"
LAYERS: list[set[str]] = [
    {"version", "errors", "deadline", "algo"},  # import nothing from grpolab (errors: the user-error base)
    {"config"},  # the typed tree and how it loads
    {"data", "parallel", "observe"},
    {"envs"},  # what users write: environments and tools
    {"rollout"},  # the episode loop drives envs
    {"rewards"},  # scores rollouts
    {"models"},  # loading, and building the embedded models from data + envs + rollout
    {"eval"},
    {"train"},
    {"compat"},  # foreign names onto the tree, at the edge
    {"api", "cli", "__main__", "__init__"},  # entry points: anything below
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _unit(path: Path) -> str:
    """The layer unit of a file: its top-level package folder, or a top-level module's stem."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "grpolab":  # `from grpolab import x`: a subpackage, else the root package's
                names = [f"grpolab.{a.name}" if a.name in LAYER_OF else "grpolab.__init__" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "grpolab":
                found.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {_unit(path) for path in _sources()}
    assert units - LAYER_OF.keys() == set(), "a new package or top-level module needs a place in LAYERS"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in _sources():
        unit = _unit(path)
        for line, target in _imported_units(ast.parse(path.read_text(encoding="utf-8"))):
            if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[unit]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports grpolab.{target}")
    assert upward == []


def test_no_file_is_over_the_line_cap():
    long_files = [
        f"{path.relative_to(PACKAGE)}: {n}"
        for path in _sources()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    ]
    assert long_files == []


@pytest.mark.parametrize("folder", ["train", "algo"])
def test_no_function_in_the_step_is_over_sixty_lines(folder):
    long_functions = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long_functions == []


def test_the_checks_catch_what_they_look_for():
    """The checks themselves can fail: an upward import and a long function, written on purpose."""
    source = "def f():\n    from grpolab.train.trainer import Trainer\n" + "    x = 1\n" * 60
    tree = ast.parse(source)
    assert _imported_units(tree) == [(2, "train")]
    assert LAYER_OF["train"] > LAYER_OF["algo"]
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef) and (function.end_lineno or 0) - function.lineno + 1 == 62
