"""A Python tool: runs model-written code in a separate, resource-limited, sandboxed process.

NOT A SECURITY BOUNDARY against a determined attacker (the seccomp filter covers sockets only, there
is no separate user, the kernel is shared): run untrusted code at scale in a container or VM (gVisor, nsjail,
a throwaway VM). What it does promise, each claim tested by an adversarial snippet in
tests/agent/test_python_sandbox.py, on Linux:

- **Secrets are not visible.** The environment is replaced (PATH, HOME/TMPDIR = the temp dir, a
  UTF-8 locale); the working directory is a fresh temp dir. In a new PID namespace (`unshare`) the
  trainer's process does not exist for the code, so `/proc/<trainer pid>/environ` and
  `/proc/<trainer pid>/cwd/.env` cannot be opened; with Landlock, /proc is not readable at all and
  neither is any file outside the Python standard library, the system's shared libraries and the
  temp dir (so `.env` cannot be read by its absolute path either).
- **Writes stay in the temp dir** (Landlock): creating, changing or deleting a file elsewhere fails
  with PermissionError.
- **No network** (a new, empty network namespace; Landlock TCP rules too): connecting to
  127.0.0.1 fails.
- **No Unix sockets** (a seccomp filter): the namespace and Landlock do not cover socket files, so
  `socket(AF_UNIX)` is refused outright (and datagram socket pairs, and io_uring, which could open
  one behind the filter); a socket file anywhere (a docker.sock, a service in the working tree)
  cannot be connected to. Stream socket pairs (asyncio's self-pipe) still work; what listens on a
  Unix socket (multiprocessing's forkserver and managers) does not.
- **Disk** (with namespaces): the working directory is a private tmpfs of `disk_mb`, so all the
  files together cannot grow past it (ENOSPC), on top of RLIMIT_FSIZE per file.
- **Nothing outlives the call**: the process group is SIGKILLed at the end; in the PID namespace
  the kernel kills every process when the program's process ends, a `setsid()` grandchild included.
- **The trainer cannot be signalled** (the PID namespace hides it; Landlock scoping (ABI 6) denies
  signals outside the sandbox).
- **Limits** (setrlimit): CPU seconds (SIGXCPU), address space per process (MemoryError), file size
  (SIGXFSZ; stdout/stderr go to files, so a print loop cannot fill the trainer's memory), no core
  dumps, and a process count (RLIMIT_NPROC = this user's processes + `max_processes`), plus a
  wall-clock timeout. Memory is per process: the total is at most `max_processes x memory_mb`.
- `python -I -S`: no PYTHON* variables, no user site, no site-packages (with Landlock the code
  cannot add them back by editing sys.path either: they are not readable). `site_packages=True`
  allows them.

Not guaranteed, and why: where `unshare` (unprivileged user namespaces) or Landlock (Linux >= 5.13,
enabled in the kernel's LSM list) is missing, the matching promises above do not hold; the tool
then runs in the weaker mode and logs one warning saying which. The kernel exempts root (uid 0 in
the initial user namespace) from RLIMIT_NPROC, so a trainer running as root gets no process-count
limit (the wall-clock kill still ends every process in the namespace). Any file the trainer's user
can read under the allowed directories can be read: the standard library, the system's /usr/lib
(Debian's dist-packages included), and an interpreter's own site-packages where it sits inside the
standard library's directory (python.org and pyenv builds; a venv's site-packages is outside it).

preexec_fn is not safe when the calling process runs threads that hold locks at fork time; the
rollout loop calls tools from the main thread only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grpolab.envs.tools import Tool, ToolError, text_tool

log = logging.getLogger("grpolab")
BOOT = Path(__file__).with_name("sandbox_boot.py")  # applies Landlock in the child, then runs main.py


@dataclass(frozen=True)
class PythonLimits:
    timeout_s: float = 5.0  # wall clock, including interpreter start-up (~20 ms with -S)
    cpu_s: float = 5.0  # CPU seconds (RLIMIT_CPU, rounded up to whole seconds)
    memory_mb: int = 512  # address space (RLIMIT_AS); the bare interpreter needs ~30 MB
    output_file_mb: int = 4  # largest file the code may write, stdout and stderr included
    max_output_chars: int = 2000  # characters of output returned to the model
    max_code_chars: int = 20_000
    site_packages: bool = False  # True: drop -S so installed packages can be imported
    max_processes: int = 16  # processes the code may have at once (RLIMIT_NPROC above the current count)
    disk_mb: int = 64  # all files in the working directory together (a tmpfs; needs namespaces)


def _limit_child(limits: PythonLimits, processes: int) -> None:
    """Runs in the child between fork and exec: only async-signal-safe-ish work, no allocation-heavy code."""
    cpu = max(1, math.ceil(limits.cpu_s))
    # Hard CPU limit one second above the soft one: SIGXCPU at the soft limit, SIGKILL at the hard.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits.output_file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def _user_processes() -> int:
    """Processes of this user now: RLIMIT_NPROC counts them all, so the limit sits this far above."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


UNSHARE = ["unshare", "--user", "--map-current-user", "--pid", "--fork", "--kill-child", "--mount-proc", "--net"]


@functools.cache
def _namespaces() -> list[str]:
    """The `unshare` prefix when this system allows unprivileged user/PID/network namespaces, else []."""
    try:
        ok = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        log.warning(
            "python tool: unshare (user/PID/network namespaces) is not available here: the tool's code can "
            "see the trainer's process and the network, setsid() children can outlive it, and its files "
            "have no total size limit"
        )
    return list(UNSHARE) if ok else []


@functools.cache
def _landlock_abi() -> int:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        abi = int(libc.syscall(444, None, 0, 1))  # landlock_create_ruleset(NULL, 0, VERSION)
    except (OSError, AttributeError):
        abi = -1
    if abi < 1:
        log.warning(
            "python tool: Landlock is not available in this kernel: the tool's code can read any file the "
            "trainer's user can read and write outside its temp dir"
        )
    return max(abi, 0)


def _readable_paths(site_packages: bool) -> list[str]:
    # the standard library itself (os.py's directory) and its extension modules, not sysconfig's
    # "platstdlib": in a venv that is the venv's lib/pythonX.Y, which holds site-packages
    stdlib = {os.path.dirname(os.__file__), str(sysconfig.get_config_var("DESTSHARED") or "")}
    if site_packages:
        stdlib |= {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    system = ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache", "/dev/urandom"]
    return sorted(p for p in stdlib if p) + system


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
        plan = {
            "landlock": _landlock_abi() > 0,
            "read": _readable_paths(limits.site_packages),
            "write": [str(work), "/dev/null"],
            "seccomp": sys.platform == "linux" and os.uname().machine in ("x86_64", "aarch64"),
            "disk_mb": limits.disk_mb if _namespaces() else None,  # mounting needs the mount namespace
        }
        command = [*_namespaces(), sys.executable, *flags, str(BOOT), json.dumps(plan)]
        processes = _user_processes() + limits.max_processes
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=work,
                    env=_environment(str(work)),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group, so killpg reaches its children
                    preexec_fn=lambda: _limit_child(limits, processes),
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
    if returncode == 70 and stderr.startswith("sandbox:"):
        raise ToolError(f"could not start the sandbox: {stderr.strip()}")
    if returncode != 0:
        detail = _tail(stderr.strip(), limits.max_output_chars)
        last_line = detail.rsplit("\n", 1)[-1]
        if "MemoryError" in last_line:
            raise ToolError(f"memory limit of {limits.memory_mb} MB exceeded (MemoryError)")
        if "File too large" in last_line:  # Python ignores SIGXFSZ, so RLIMIT_FSIZE surfaces as EFBIG
            raise ToolError(f"output larger than {limits.output_file_mb} MB")
        if "No space left on device" in last_line:
            raise ToolError(f"disk limit of {limits.disk_mb} MB for all files exceeded")
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

    description = "Run a Python 3 program (standard library only) and return what it prints."
    return text_tool(python, description, "code", "a complete program; print() the results")
