"""What users install is the wheel: build it from this checkout, install it into a fresh venv, and run
`grpolab train -c quick_test` from an empty directory, so the presets and the embedded model must
come from inside the installed package (nothing from the source tree or the working directory).

No download: the new venv gets the running interpreter's dependencies through a .pth file (one path
per line is appended to sys.path; the .pth files found there, such as this checkout's editable
install, are not run), and grpolab itself only from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """pip wheel from a copy of the sources, so the build leaves no build/ or egg-info in the checkout."""
    source = tmp / "source"
    (source / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src" / "grpolab", source / "src" / "grpolab", ignore=ignore)
    import setuptools

    # setuptools >= 70.1 builds wheels by itself (older ones need the `wheel` package); torch 2.13 needs >= 77
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    assert (major, minor) >= (70, 1), (
        f"setuptools {setuptools.__version__} cannot build the wheel: pip install -U setuptools"
    )
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", source, cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("grpolab-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A venv on the same interpreter with only the wheel installed; the dependencies are the running
    interpreter's site-packages (the repository's .venv in CI), reached through a .pth file."""
    target = tmp / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "--no-deps", "--no-index", wheel, cwd=tmp, env=env)
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp, env=env)
    dependencies = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    assert dependencies, f"no site-packages on {sys.path}"
    (Path(purelib.stdout.strip()) / "grpolab_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return target


def test_wheel_installs_and_trains_the_quick_test_preset_from_an_empty_directory(tmp_path: Path) -> None:
    # the source tree must not leak in: no PYTHONPATH, and the run starts in an empty directory
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PIP_DISABLE_PIP_VERSION_CHECK="1")
    wheel = build_wheel(tmp_path, env)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"grpolab/configs/quick_test.yaml", "grpolab/configs/model/tiny.yaml"} <= names
    assert "grpolab/models/tiny/model.safetensors" in names

    target = fresh_venv(tmp_path, wheel, env)
    imported = run(target / "bin" / "python", "-c", "import grpolab; print(grpolab.__file__)", cwd=tmp_path, env=env)
    assert Path(imported.stdout.strip()).is_relative_to(target), imported.stdout  # the wheel's copy

    empty = tmp_path / "empty"
    empty.mkdir()
    small = [  # seconds, not a minute: 2 steps, 4 questions per evaluation, short completions
        *("train.max_steps=2", "eval.every_steps=0", "generation.max_new_tokens=12"),
        *("data.test_size=4", "data.val_size=4", "eval.size=4", "logging.tensorboard=false"),
    ]
    run(target / "bin" / "grpolab", "train", "-c", "quick_test", *small, cwd=empty, env=env, timeout=300)

    (run_dir,) = (empty / "outputs" / "quick_test").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["step"]) == ("finished", 2)
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {2} <= {row.get("step") for row in steps}
    assert (run_dir / "config.yaml").is_file()
