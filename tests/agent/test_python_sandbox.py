"""Each promise of the Python tool's docstring, attacked by the snippet a hostile policy would write.

The promises that need `unshare` (PID/network namespaces) or Landlock are skipped where the system
lacks them: the tool then runs in its documented weaker mode (and says so in a warning)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import sysconfig
import time
from pathlib import Path

import pytest

from grpolab.envs.python_tool import PythonLimits, _landlock_abi, _namespaces, run_python
from grpolab.envs.tools import ToolError

FAST = PythonLimits(timeout_s=2.0, cpu_s=2.0, memory_mb=256, max_output_chars=2000)
SECRET = "sk-or-v1-do-not-leak-0123456789"

needs_namespaces = pytest.mark.skipif(not _namespaces(), reason="unshare (user/PID/net namespaces) unavailable")
needs_landlock = pytest.mark.skipif(_landlock_abi() < 1, reason="Landlock unavailable in this kernel")


def output(code: str, limits: PythonLimits = FAST) -> str:
    """What the model would see: stdout, or the ToolError's text."""
    try:
        return run_python(code, limits)
    except ToolError as err:
        return f"ToolError: {err}"


def test_the_trainers_secrets_are_not_readable(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", SECRET)
    (tmp_path / ".env").write_text(f"OPENROUTER_API_KEY={SECRET}\n")
    monkeypatch.chdir(tmp_path)
    pid = os.getpid()
    # every route the audit found, plus a scan of all of /proc and the .env by its absolute path
    code = f"""
import os, glob
found = []
for path in ["/proc/{pid}/environ", "/proc/{pid}/cwd/.env", "/proc/self/environ", "{tmp_path}/.env",
             *glob.glob("/proc/*/environ")]:
    try:
        found.append(open(path, "rb").read().decode(errors="replace"))
    except OSError:
        pass
print("LEAK" if any("{SECRET}" in text for text in found) or "{SECRET}" in str(os.environ) else "clean")
"""
    assert output(code) == "clean\n"


@needs_namespaces
def test_the_trainer_process_is_invisible_and_cannot_be_signalled():
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: received.append(signum))
    try:
        out = output(f"import os, signal\nprint(os.getppid())\nos.kill({os.getpid()}, signal.SIGUSR1)")
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []
    assert out.startswith("0\n") or "ProcessLookupError" in out or "PermissionError" in out


@needs_landlock
def test_writes_outside_the_temp_dir_fail(tmp_path):
    target = tmp_path / "escaped.txt"
    out = output(f"open({str(target)!r}, 'w').write('x' * 30_000_000)")
    assert "PermissionError" in out and not target.exists()
    assert output("open('inside.txt', 'w').write('fine'); print(open('inside.txt').read())") == "fine\n"


@needs_namespaces
def test_no_network_even_to_localhost():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        out = output(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')")
        with pytest.raises(TimeoutError):
            server.accept()  # nobody came
    finally:
        server.close()
    assert "connected" not in out and "Error" in out


@needs_namespaces
def test_a_setsid_grandchild_does_not_outlive_the_call():
    code = (
        "import os, time\nprint(os.getcwd(), flush=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(30)\n"
    )
    marker = run_python(code, FAST).strip()
    deadline = time.time() + 1.0
    while time.time() < deadline:
        alive = [p for p in Path("/proc").glob("[0-9]*") if _live_and_mentions(p, marker)]
        if not alive:
            return
        time.sleep(0.02)
    raise AssertionError(f"processes outlived the tool call: {alive}")


def _live_and_mentions(proc: Path, marker: str) -> bool:
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        where = os.readlink(proc / "cwd") + (proc / "cmdline").read_bytes().decode(errors="replace")
        return state not in ("Z", "X") and marker in where
    except (OSError, IndexError):
        return False


def test_the_process_count_is_limited():
    out = output("import resource\nprint(resource.getrlimit(resource.RLIMIT_NPROC)[0])")
    limit = int(out)
    mine = sum(1 for p in Path("/proc").glob("[0-9]*") if _owned(p))
    assert limit <= mine + FAST.max_processes + 5  # this user's processes now + max_processes (+ churn)
    if os.getuid() == 0:
        pytest.skip("the kernel exempts root from RLIMIT_NPROC (documented); the limit is set, not enforced")
    bomb = (
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(5)\n"
        "        n += 1\nexcept OSError:\n    print(n)"
    )
    assert int(output(bomb)) <= FAST.max_processes


def _owned(proc: Path) -> bool:
    try:
        return proc.stat().st_uid == os.getuid()
    except OSError:
        return False


@needs_landlock
def test_site_packages_cannot_be_added_back():
    site = sysconfig.get_paths()["purelib"]
    out = output(f"import sys\nsys.path.append({site!r})\nimport pytest\nprint('imported')")
    assert "imported" not in out and ("ModuleNotFoundError" in out or "PermissionError" in out)


def test_memory_limit_is_per_process():
    out = output("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20)")
    assert int(out) == FAST.memory_mb
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != FAST.memory_mb * 2**20  # the trainer is not limited


def test_unix_socket_files_cannot_be_reached(tmp_path):
    """Neither the network namespace nor Landlock covers a socket file: before the seccomp filter, a
    connect to one under the trainer's working tree succeeded (the audit's finding)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "service.sock"))
    server.listen(1)
    server.settimeout(0.3)
    attempts = {
        "stream": f"s = socket.socket(socket.AF_UNIX)\ns.connect({str(tmp_path / 'service.sock')!r})",
        "datagram pair": f"a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        f"a.sendto(b'x', {str(tmp_path / 'service.sock')!r})",
        "abstract": "s = socket.socket(socket.AF_UNIX)\ns.connect('\\0grpolab-test')",
        # ctypes calls socket(AF_UNIX, SOCK_STREAM, 0) itself (41 on x86-64, 198 on arm64): -1 = refused
        "raw syscall": "import ctypes\nnr = 41 if os.uname().machine == 'x86_64' else 198\n"
        "if ctypes.CDLL(None).syscall(nr, 1, 1, 0) < 0:\n    raise PermissionError('refused')",
    }
    try:
        for name, attack in attempts.items():
            out = output(f"import os, socket\n{attack}\nprint('reached')")
            assert "reached" not in out and "PermissionError" in out, (name, out)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody came
    finally:
        server.close()
    # what stays allowed: a stream socket pair (asyncio's event loop makes one)
    assert output("import asyncio\nasync def f():\n    return 7\nprint(asyncio.run(f()))") == "7\n"


@needs_namespaces
def test_all_files_together_are_capped():
    # 3 MB files stay under RLIMIT_FSIZE (4 MB) each; 40 of them (120 MB) used to fill the disk
    limits = PythonLimits(timeout_s=5.0, disk_mb=32)
    code = "for i in range(40):\n    open(f'f{i}', 'wb').write(b'x' * 3_000_000)\nprint('wrote all')"
    assert output(code, limits) == "ToolError: disk limit of 32 MB for all files exceeded"
    assert output("open('a', 'wb').write(b'x' * 3_000_000)\nprint('fine')", limits) == "fine\n"
