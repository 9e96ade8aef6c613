"""Atomic directories: a directory is written into a hidden sibling, fsynced, then renamed into place.

A rename within one directory is atomic on POSIX, so the target either does not exist or is
complete. Replacing an existing directory needs two renames (the old one away, the new one in); a
crash between them leaves `.old-NAME-PID`, which `checkpoint.clean_stale` renames back. A save that
runs out of disk space raises DiskFullError naming the directory, and leaves what was there before.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grpolab.errors import UserError

# hidden siblings: a save in progress (tmp), a replaced dir not yet deleted (old), a dir being deleted (del)
HIDDEN_RE = re.compile(r"\.(tmp|old|del)-(.+)-(\d+)")

# --- atomic directories ---------------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    if path.is_dir() and os.name != "posix":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    # Files first, then their directories: after this, a power cut cannot leave the renamed
    # checkpoint with missing or truncated files.
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        fsync_path(path)
    fsync_path(root)


def remove_dir(path: Path) -> None:
    # Rename before deleting: rmtree is not atomic, and a half-deleted step-N that still holds
    # trainer_state.json would look like a checkpoint.
    doomed = path.parent / f".del-{path.name}-{os.getpid()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def _install(tmp: Path, target: Path) -> None:
    """Rename the finished `tmp` to `target`, moving an existing `target` out of the way first."""
    old = None
    if target.exists():
        # os.replace cannot replace a non-empty directory, hence two renames.
        old = target.parent / f".old-{target.name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old)


class DiskFullError(UserError, OSError):
    """A save ran out of disk space (or quota); what was there before is untouched."""


def _out_of_space(err: BaseException, where: Path) -> bool:
    seen: BaseException | None = err
    while seen is not None:  # the ENOSPC may sit under a library's own exception
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    # torch.save's zip writer reports a short write as RuntimeError("... unexpected pos N vs M"),
    # without the errno; a nearly full disk at that moment is the tell
    try:
        return shutil.disk_usage(where).free < 16 * 2**20
    except OSError:
        return False


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of `target`; on success it becomes `target`, on error it goes.
    Running out of disk space raises DiskFullError naming the device's directory and `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _install(tmp, target)
    except BaseException as err:
        full = isinstance(err, Exception) and _out_of_space(err, target.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            kept = "the previous one is kept" if target.exists() else "nothing was written"
            raise DiskFullError(
                f"no space left on device in {target.parent} while writing {target.name} ({kept})"
            ) from err
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale(checkpoints_dir: Path) -> None:
    """Finish what a killed save left behind: delete `.tmp-`/`.del-` dirs of dead processes and put an
    `.old-NAME` back where NAME is missing (a crash between the two renames of `_install`)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return
    for path in root.iterdir():
        match = HIDDEN_RE.fullmatch(path.name)
        if not match or not path.is_dir():
            continue
        kind, name, pid = match.group(1), match.group(2), int(match.group(3))
        if pid == os.getpid() or _pid_alive(pid):
            continue  # a save in progress (ours or another live process's)
        if kind == "old" and not (root / name).exists():
            os.replace(path, root / name)
        else:
            shutil.rmtree(path, ignore_errors=True)
