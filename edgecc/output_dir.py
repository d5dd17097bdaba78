"""Write outputs atomically: into a hidden staging directory, moved into place at the end.

A compile never leaves a half-written bundle where the user looks: everything is written
into ``.OUT.edgecc-PID-XXXX`` beside ``OUT`` and moved into place in one step when
verification has passed. If anything fails -- an exception, or the process killed with
SIGKILL at any point -- ``OUT`` is as it was (absent, empty, or with ``force`` its previous
contents), or, once the final step has happened, the complete new bundle.

* The final step swaps the two directories atomically (Linux ``renameat2`` with
  ``RENAME_EXCHANGE``); where that is unavailable, ``OUT`` is renamed aside to
  ``.OUT.edgecc-PID-XXXX.old`` and the staging directory renamed to ``OUT``: a kill
  between the two renames is repaired by the next run, which renames the ``.old``
  directory back.
* Staging directories left by a killed compile (their PID no longer running) are removed
  by the next compile into the same parent directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
from types import TracebackType

from edgecc.errors import OutputDirError

STAGING_TAG = ".edgecc-"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def check_output_dir(path: str, *, force: bool, protected: tuple[str, ...] = ()) -> None:
    """Refuse a directory that would lose data: non-empty without ``force``, a file, or one
    that holds a protected path (the input model). Repairs what a killed compile left first
    (:func:`recover_interrupted`)."""
    recover_interrupted(path)
    real = os.path.realpath(path)
    for p in protected:
        if p and os.path.exists(p) and os.path.realpath(p).startswith(real.rstrip(os.sep) + os.sep):
            raise OutputDirError(
                f"output directory '{path}' contains the input model '{p}'; "
                "choose another output directory"
            )
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise OutputDirError(f"output path '{path}' exists and is not a directory")
        if os.listdir(path) and not force:
            raise OutputDirError(
                f"output directory '{path}' exists and is not empty; "
                "pass --force (force=True) to replace it, or choose another"
            )
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(parent):
        raise OutputDirError(f"parent directory of '{path}' does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputDirError(f"cannot write to '{parent}' (permission denied)")


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def leftovers(path: str) -> list[tuple[str, int, bool]]:
    """Staging directories of ``path`` in its parent: ``(full path, pid, is_backup)``."""
    final = os.path.abspath(path)
    parent, base = os.path.dirname(final), os.path.basename(final)
    pattern = re.compile(rf"^\.{re.escape(base)}{re.escape(STAGING_TAG)}(\d+)-[^/]*?(\.old)?$")
    found = []
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            m = pattern.match(name)
            if m:
                found.append((os.path.join(parent, name), int(m.group(1)), bool(m.group(2))))
    return found


def recover_interrupted(path: str) -> list[str]:
    """Undo what a compile killed mid-way left beside ``path``: put the previous output
    back if it was renamed aside and never replaced, and remove staging directories whose
    process is gone. Returns the paths removed or restored."""
    final = os.path.abspath(path)
    done = []
    for entry, pid, backup in leftovers(final):
        if _pid_running(pid):
            continue  # a compile in progress (or this one)
        if backup and not os.path.exists(final):
            os.rename(entry, final)  # killed between the two renames of the fallback
        else:
            shutil.rmtree(entry, ignore_errors=True)
        done.append(entry)
    return done


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux >= 3.15); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


class StagedOutput:
    """``with StagedOutput(final) as tmp: ...write into tmp...; stage.commit()``."""

    def __init__(self, final: str):
        self.final = os.path.abspath(final)
        self.tmp = ""
        self.committed = False

    def __enter__(self) -> str:
        parent = os.path.dirname(self.final)
        prefix = f".{os.path.basename(self.final)}{STAGING_TAG}{os.getpid()}-"
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is not
        return self.tmp

    def commit(self) -> None:
        """Put the staging directory in place of ``final`` in one step."""
        if os.path.exists(self.final):
            if _exchange(self.tmp, self.final):
                self.committed = True
                shutil.rmtree(self.tmp, ignore_errors=True)  # now the previous output
                return
            backup = self.tmp + ".old"
            os.rename(self.final, backup)
            os.rename(self.tmp, self.final)
            self.committed = True
            shutil.rmtree(backup, ignore_errors=True)
            return
        os.rename(self.tmp, self.final)
        self.committed = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)
