"""include / exclude globs over layer names, shared by the pruning passes."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from edgecc.errors import OptionError


def check_patterns(names: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> None:
    """A pattern that matches no prunable layer is an error (almost always a typo)."""
    for kind, patterns in (("include", include), ("exclude", exclude)):
        for p in patterns:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                raise OptionError(f"{kind} pattern '{p}' matches no prunable layer (layers are "
                                  f"named like {', '.join(list(names)[:3])}, ...)")


def selected(names: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether a unit made of layers ``names`` is chosen by the globs."""
    if include and not any(fnmatch.fnmatchcase(n, p) for n in names for p in include):
        return False
    return not any(fnmatch.fnmatchcase(n, p) for n in names for p in exclude)
