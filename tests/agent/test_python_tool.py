"""The Python tool: every way code can misbehave comes back as a ToolError within its limit.

Limits are small (1 s) so that each test stays under ~1.5 s on a busy machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from grpolab.envs.python_tool import PythonLimits, python_tool, run_python
from grpolab.envs.tools import ToolError

FAST = PythonLimits(timeout_s=1.0, cpu_s=1.0, memory_mb=256, max_output_chars=200)


def fails(code: str, limits: PythonLimits = FAST) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(ToolError) as err:
        run_python(code, limits)
    return str(err.value), time.perf_counter() - start


def test_prints_come_back():
    assert run_python("print(123 * 456)", FAST) == "56088\n"
    assert python_tool(FAST).fn(code="import math\nprint(math.comb(5, 2))") == "10\n"


def test_no_output_is_explained():
    assert "print()" in run_python("x = 1", FAST)


def test_wall_clock_timeout_kills_a_sleeper():
    message, seconds = fails("import time\ntime.sleep(30)")
    assert "timed out after 1 s" in message and seconds < 2.5


def test_infinite_loop_is_stopped():
    # CPU limit (SIGXCPU) or wall clock, whichever fires first.
    message, seconds = fails("while True:\n    pass")
    assert ("CPU time limit" in message or "timed out" in message) and seconds < 2.5


def test_memory_bomb_is_a_memory_error():
    message, seconds = fails("x = bytearray(10**10)")
    assert "memory limit of 256 MB" in message and seconds < 2.5
    message, _ = fails("x = [0] * (10**9)")
    assert "memory limit" in message


def test_crashes_are_tool_errors():
    assert fails("import os\nos._exit(3)")[0] == "exited with status 3"
    message, _ = fails("raise ValueError('boom')")
    assert message.endswith("ValueError: boom") and 'File "main.py", line 1' in message
    assert "SIGSEGV" in fails("import ctypes\nctypes.string_at(0)")[0]
    assert "SyntaxError" in fails("def (:")[0]


def test_output_is_truncated_and_a_flood_is_stopped():
    out = run_python("print('y' * 1000)", FAST)
    assert out.startswith("y" * 200) and "[output truncated to 200 characters]" in out
    message, seconds = fails("while True:\n    print('x' * 10000)")
    assert "output larger than 4 MB" in message and seconds < 2.5


def test_environment_is_stripped_and_the_workdir_is_fresh_and_removed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    out = run_python("import os\nprint(sorted(os.environ))\nprint(os.getcwd())\nprint(os.listdir())", FAST)
    names, cwd, listing = out.splitlines()
    assert "OPENAI_API_KEY" not in names and "PYTHONPATH" not in names
    assert listing == "['main.py']"
    assert not Path(cwd).exists()


def test_site_packages_are_off_by_default():
    assert "ModuleNotFoundError" in fails("import pytest")[0]


def test_leftover_children_are_killed():
    # the child reports its (unique) working directory, which is in every descendant's command line
    code = "import os, time\nprint(os.getcwd(), flush=True)\nif os.fork() == 0:\n    time.sleep(30)\n"
    marker = run_python(code, FAST).strip()
    for _ in range(50):
        if not _processes_mentioning(marker):
            return
        time.sleep(0.02)
    raise AssertionError("a forked child survived the tool call")


def _processes_mentioning(marker: str) -> list[str]:
    """Live (not zombie) processes whose working directory or command line mentions `marker`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = os.readlink(proc / "cwd") + (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and marker in cmdline:
            found.append(proc.name)
    return found


def test_bad_input_is_a_tool_error():
    assert fails("")[0] == "no code given"
    assert "longer than" in fails("x" * 30_000)[0]
