"""Runs inside the Python tool's child process (standard library only: it starts with `python -I -S`),
confines it with Landlock where the kernel has it, then runs `main.py` as `__main__`.

argv[1] is a JSON object: {"write": [dirs], "read": [dirs or files], "landlock": bool}.
Landlock (Linux >= 5.13) is a kernel access control a process applies to itself and its children,
irreversibly: afterwards the code can read only the listed paths, write only under "write", make no
TCP connection (ABI >= 4), and signal no process outside its sandbox (ABI >= 6), its parent included.
Exit status 70 with a line on stderr when Landlock was required but could not be applied.
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


def main() -> None:
    plan = json.loads(sys.argv[1])
    if plan.get("landlock"):
        why = _landlock(plan["read"], plan["write"])
        if why:
            print(f"sandbox: {why}", file=sys.stderr)
            sys.exit(70)
    with open("main.py", encoding="utf-8") as handle:
        code = compile(handle.read(), "main.py", "exec")
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
