"""Runs inside the Python tool's child process (standard library only: it starts with `python -I -S`),
confines it with Landlock where the kernel has it, then runs `main.py` as `__main__`.

argv[1] is a JSON object: {"write": [dirs], "read": [dirs or files], "landlock": bool, "seccomp": bool,
"disk_mb": int or null (a tmpfs of that size over the working directory: needs a mount namespace)}.
Landlock (Linux >= 5.13) is a kernel access control a process applies to itself and its children,
irreversibly: afterwards the code can read only the listed paths, write only under "write", make no
TCP connection (ABI >= 4), and signal no process outside its sandbox (ABI >= 6), its parent included.
A seccomp filter then refuses Unix sockets (see `_unix_socket_filter`).
Exit status 70 with a line on stderr when a part of the plan could not be applied.
"""

import ctypes
import json
import os
import sys
import traceback

# struct landlock_ruleset_attr / landlock_path_beneath_attr, include/uapi/linux/landlock.h
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FILE_RIGHTS_V1 = _EXECUTE | _WRITE_FILE | _READ_FILE
_ALL_FS_V1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on x86-64 and arm64
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(read: list, write: list) -> str:
    """Apply the sandbox; return "" on success, else why not."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return f"Landlock unavailable ({os.strerror(ctypes.get_errno())})"
    fs = _ALL_FS_V1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    attr = (ctypes.c_uint64 * 3)(fs, (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0, 0)
    if abi >= 6:
        attr[2] = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return f"Landlock ruleset refused ({os.strerror(ctypes.get_errno())})"
    file_rights = _FILE_RIGHTS_V1 | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    for paths, rights in ((read, _EXECUTE | _READ_FILE | _READ_DIR), (write, fs)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a library directory this system does not have
            allowed = rights if os.path.isdir(path) else rights & file_rights
            rule = _PathBeneath(allowed, fd)
            failed = libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0
            os.close(fd)
            if failed:
                return f"Landlock rule for {path} refused ({os.strerror(ctypes.get_errno())})"
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
        return f"Landlock could not be applied ({os.strerror(ctypes.get_errno())})"
    os.close(ruleset)
    return ""


# Seccomp: a classic-BPF program over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
_ARCHES = {"x86_64": (0xC000003E, 41, 53), "aarch64": (0xC00000B7, 198, 199)}  # audit arch, socket, socketpair
_IO_URING_SETUP = 425  # the same on both: io_uring could create and connect sockets behind the filter's back
_AF_UNIX, _SOCK_DGRAM, _EPERM = 1, 2, 1
_LD_ABS, _JEQ, _JGE, _AND, _RET = 0x20, 0x15, 0x35, 0x54, 0x06
_ALLOW, _DENY = 0x7FFF0000, 0x00050000 | _EPERM  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO(EPERM)
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Insn))]


def _unix_socket_filter(machine: str) -> list:
    """(code, jump if true, jump if false, k) rows: deny socket(AF_UNIX, ...) and socketpair(AF_UNIX,
    SOCK_DGRAM) (a datagram pair can still sendto() any socket file), io_uring, x32 and foreign-arch
    system calls (int 0x80 reaches the i386 table, where socketcall hides socket). Unix sockets are
    what Landlock (before its Unix-socket rights) and the network namespace leave open: a socket
    file reachable by path (a docker.sock, a trainer-side service) connects from inside the sandbox.
    connect() itself cannot be filtered by family (its address is a pointer seccomp cannot read).
    Jumps name labels (the strings in the list), resolved to relative offsets at the end."""
    arch, socket_nr, pair_nr = _ARCHES[machine]
    x32 = [(_JGE, "deny", "", 0x40000000)] if machine == "x86_64" else []
    rows: list = [
        (_LD_ABS, "", "", 4),
        (_JEQ, "", "deny", arch),
        (_LD_ABS, "", "", 0),
        *x32,
        (_JEQ, "socket", "", socket_nr),
        (_JEQ, "pair", "", pair_nr),
        (_JEQ, "deny", "allow", _IO_URING_SETUP),
        "socket",
        (_LD_ABS, "", "", 16),  # args[0] (low word): the family
        (_JEQ, "deny", "allow", _AF_UNIX),
        "pair",
        (_LD_ABS, "", "", 16),
        (_JEQ, "", "allow", _AF_UNIX),
        (_LD_ABS, "", "", 24),  # args[1]: the type, without SOCK_NONBLOCK / SOCK_CLOEXEC
        (_AND, "", "", 0xF),
        (_JEQ, "deny", "allow", _SOCK_DGRAM),
        "deny",
        (_RET, "", "", _DENY),
        "allow",
        (_RET, "", "", _ALLOW),
    ]
    where, n = {}, 0
    for row in rows:
        if isinstance(row, str):
            where[row] = n
        else:
            n += 1
    out, i = [], 0
    for row in rows:
        if not isinstance(row, str):
            i += 1  # jumps count from the next instruction
            out.append((row[0], where[row[1]] - i if row[1] else 0, where[row[2]] - i if row[2] else 0, row[3]))
    return out


def _seccomp() -> str:
    """Install the filter (inherited by every child, irreversible); "" on success, else why not."""
    machine = os.uname().machine
    if machine not in _ARCHES:
        return f"no seccomp filter for {machine}"
    rows = _unix_socket_filter(machine)
    insns = (_Insn * len(rows))(*(_Insn(*row) for row in rows))
    prog = _Prog(len(rows), insns)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"no_new_privs refused ({os.strerror(ctypes.get_errno())})"
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        return f"seccomp filter refused ({os.strerror(ctypes.get_errno())})"
    return ""


def _private_tmpfs(size_mb: int, code: str) -> str:
    """Mount a tmpfs of `size_mb` over the working directory (this process is root of its own user
    and mount namespace), so the code's files together cannot outgrow it; main.py is put back."""
    libc = ctypes.CDLL(None, use_errno=True)
    here = os.getcwd()
    if libc.mount(b"tmpfs", here.encode(), b"tmpfs", 0, f"size={size_mb}m,mode=700".encode()) != 0:
        return f"tmpfs of {size_mb} MB could not be mounted ({os.strerror(ctypes.get_errno())})"
    os.chdir(here)  # the old cwd is the directory under the mount
    with open("main.py", "w", encoding="utf-8") as handle:
        handle.write(code)
    return ""


def _fail(why: str) -> None:
    if why:
        print(f"sandbox: {why}", file=sys.stderr)
        sys.exit(70)


def main() -> None:
    plan = json.loads(sys.argv[1])
    with open("main.py", encoding="utf-8") as handle:
        source = handle.read()
    code = compile(source, "main.py", "exec")
    if plan.get("disk_mb"):
        _fail(_private_tmpfs(plan["disk_mb"], source))
    if plan.get("landlock"):
        _fail(_landlock(plan["read"], plan["write"]))
    if plan.get("seccomp"):
        _fail(_seccomp())
    sys.argv = ["main.py"]
    namespace = {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}
    try:
        exec(code, namespace)  # the model's program, in a namespace of its own
    except SystemExit:
        raise
    except BaseException as err:  # show the program's frames only, as `python main.py` would
        tb = err.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "main.py":
            tb = tb.tb_next
        traceback.print_exception(type(err), err, tb)
        sys.exit(1)


if __name__ == "__main__":
    main()
