"""Write outputs atomically: into a hidden staging directory, moved into place at the end.

If anything fails, the staging directory is removed and the user's output directory is as
it was (absent, empty, or -- with ``force`` -- its previous contents).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from types import TracebackType

from edgecc.errors import OutputDirError


def check_output_dir(path: str, *, force: bool, protected: tuple[str, ...] = ()) -> None:
    """Refuse a directory that would lose data: non-empty without ``force``, a file, or one
    that holds a protected path (the input model)."""
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


class StagedOutput:
    """``with StagedOutput(final) as tmp: ...write into tmp...; stage.commit()``."""

    def __init__(self, final: str):
        self.final = os.path.abspath(final)
        self.tmp = ""
        self.committed = False

    def __enter__(self) -> str:
        parent = os.path.dirname(self.final)
        self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.final)}.edgecc-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is not
        return self.tmp

    def commit(self) -> None:
        backup = ""
        if os.path.exists(self.final):
            backup = self.tmp + ".old"
            os.rename(self.final, backup)
        os.rename(self.tmp, self.final)
        self.committed = True
        if backup:
            shutil.rmtree(backup, ignore_errors=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)
