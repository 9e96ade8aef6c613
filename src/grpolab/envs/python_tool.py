"""A Python tool: runs model-written code in a separate, resource-limited process.

NOT A SECURITY BOUNDARY. This keeps an honest-but-clumsy policy (infinite loops, memory bombs,
runaway output, a crash, a stray `import os; os.environ`) from hurting the training run. It does
not stop hostile code: the child runs as the same user, can read any file that user can read,
open network connections, and spawn processes that leave the process group. Run untrusted code in
a container or VM (gVisor, firejail, nsjail, a throwaway VM) instead.

What is done, and why:
- `python -I -S` (the same interpreter as the trainer): -I ignores PYTHON* variables and the user
  site directory, -S skips `site`, so installed packages (and their import time) are out of reach;
  the standard library (math, fractions, itertools, ...) is what arithmetic and GSM8K need. Set
  `PythonLimits.site_packages=True` to allow numpy & co.
- A fresh temporary working directory, deleted afterwards; the code is written there as main.py.
- A stripped environment: PATH, HOME/TMPDIR (the temp dir) and a UTF-8 locale, nothing else, so API
  keys and tokens in the trainer's environment are not visible.
- Limits set by `setrlimit` in the child before exec (preexec_fn): CPU seconds (SIGXCPU), address
  space (MemoryError), file size (SIGXFSZ; it also caps stdout/stderr, which go to files rather than
  pipes so a print loop cannot fill the trainer's memory), no core dumps.
- A wall-clock timeout: the child leads its own session, so the whole process group is SIGKILLed,
  including anything it forked; the group is also killed after a normal exit to reap leftovers.

preexec_fn is not safe when the calling process runs threads that hold locks at fork time; the
rollout loop calls tools from the main thread only.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grpolab.envs.tools import Tool, ToolError


@dataclass(frozen=True)
class PythonLimits:
    timeout_s: float = 5.0  # wall clock, including interpreter start-up (~20 ms with -S)
    cpu_s: float = 5.0  # CPU seconds (RLIMIT_CPU, rounded up to whole seconds)
    memory_mb: int = 512  # address space (RLIMIT_AS); the bare interpreter needs ~30 MB
    output_file_mb: int = 4  # largest file the code may write, stdout and stderr included
    max_output_chars: int = 2000  # characters of output returned to the model
    max_code_chars: int = 20_000
    site_packages: bool = False  # True: drop -S so installed packages can be imported


def _limit_child(limits: PythonLimits) -> None:
    """Runs in the child between fork and exec: only async-signal-safe-ish work, no allocation-heavy code."""
    cpu = max(1, math.ceil(limits.cpu_s))
    # Hard CPU limit one second above the soft one: SIGXCPU at the soft limit, SIGKILL at the hard.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits.output_file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": os.defpath,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pid, signal.SIGKILL)


def _read(path: Path, limit: int) -> tuple[str, bool]:
    """Up to `limit` characters of a file, and whether there was more (reads at most 4*limit+4 bytes)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4 * limit + 4)
    text = head.decode("utf-8", errors="replace")
    return text[:limit], len(text) > limit or size > len(head)


def _tail(text: str, limit: int) -> str:
    # Errors keep their end (the last traceback line names the exception), cut at a line start.
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    return "...\n" + (tail.split("\n", 1)[1] if "\n" in tail[:-1] else tail)


def run_python(code: str, limits: PythonLimits = PythonLimits()) -> str:
    """Run `code` and return its stdout (truncated); raise ToolError on any failure.

    The error text is what the model sees: the end of the traceback, or which limit was hit.
    """
    if not isinstance(code, str) or not code.strip():
        raise ToolError("no code given")
    if len(code) > limits.max_code_chars:
        raise ToolError(f"code longer than {limits.max_code_chars} characters")
    flags = ["-I"] if limits.site_packages else ["-I", "-S"]
    with tempfile.TemporaryDirectory(prefix="grpolab-py-", ignore_cleanup_errors=True) as tmp:
        # The code's working directory holds only main.py; its captured output lives beside it.
        work = Path(tmp) / "work"
        work.mkdir()
        (work / "main.py").write_text(code, encoding="utf-8")
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            try:
                proc = subprocess.Popen(
                    [sys.executable, *flags, "main.py"],
                    cwd=work,
                    env=_environment(str(work)),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group, so killpg reaches its children
                    preexec_fn=lambda: _limit_child(limits),
                )
            except OSError as error:
                raise ToolError(f"could not start python: {error}") from None
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                proc.wait()
        stdout, cut = _read(out_path, limits.max_output_chars)
        stderr, _ = _read(err_path, 4 * limits.max_output_chars)
        stderr = stderr.replace(f"{work}{os.sep}", "")  # tracebacks say main.py, not /tmp/grpolab-py-x/...
    return _outcome(proc.returncode, timed_out, stdout, cut, stderr, limits)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _outcome(returncode: int, timed_out: bool, stdout: str, cut: bool, stderr: str, limits: PythonLimits) -> str:
    if timed_out:
        raise ToolError(f"timed out after {limits.timeout_s:g} s (killed)")
    if returncode < 0:
        sig = -returncode
        reasons: dict[int, str] = {
            signal.SIGXCPU: f"CPU time limit of {limits.cpu_s:g} s exceeded",
            signal.SIGKILL: "killed (CPU or memory limit)",
            signal.SIGXFSZ: f"output larger than {limits.output_file_mb} MB",
        }
        raise ToolError(reasons.get(sig, f"crashed with signal {_signal_name(sig)}"))
    if returncode != 0:
        detail = _tail(stderr.strip(), limits.max_output_chars)
        last_line = detail.rsplit("\n", 1)[-1]
        if "MemoryError" in last_line:
            raise ToolError(f"memory limit of {limits.memory_mb} MB exceeded (MemoryError)")
        if "File too large" in last_line:  # Python ignores SIGXFSZ, so RLIMIT_FSIZE surfaces as EFBIG
            raise ToolError(f"output larger than {limits.output_file_mb} MB")
        raise ToolError(detail or f"exited with status {returncode}")
    if not stdout.strip():
        # The model often forgets that only printed values come back.
        return "(no output; print() the values you need)"
    if cut:
        return f"{stdout}\n... [output truncated to {limits.max_output_chars} characters]"
    return stdout


def python_tool(limits: PythonLimits = PythonLimits()) -> Tool:
    def python(code: str) -> str:
        return run_python(code, limits)

    return Tool(
        name="python",
        description="Run a Python 3 program (standard library only) and return what it prints.",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "a complete program; print() the results"}},
            "required": ["code"],
        },
        fn=python,
    )
