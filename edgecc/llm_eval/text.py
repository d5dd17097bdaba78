"""The evaluation text: real English prose that ships offline, split without overlap.

The text is Isaac Newton's *Opticks* (4th edition, 1730; a public-domain Project Gutenberg
transcription, 567 KB), which the ``apache-tvm-ffi`` wheel -- a pinned dependency of
edgecc's TVM targets -- carries as libbacktrace's test data
(``tvm_ffi/3rdparty/libbacktrace/Isaac.Newton-Opticks.txt``). Early-modern but plain
English prose, with no markup besides ``_italics_``.

Splits (disjoint, so calibration never sees the test text)::

    calibration  the First Book  (from the first "THE FIRST BOOK OF OPTICKS" heading)
    test         the Second and Third Books (from the first "SECOND BOOK" heading)

Cleaning: the ``_`` italic markers are dropped and the hard-wrapped lines of a paragraph
joined with spaces; paragraphs are separated by a blank line.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from typing import Literal

from edgecc.errors import EdgeccError

Split = Literal["test", "calibration"]
SOURCE = "Isaac Newton, Opticks (1730), Project Gutenberg text shipped in apache-tvm-ffi"
_RELATIVE = ("3rdparty", "libbacktrace", "Isaac.Newton-Opticks.txt")


class TextError(EdgeccError):
    """The evaluation text cannot be found or read."""


def text_path() -> str:
    spec = importlib.util.find_spec("tvm_ffi")
    if spec is None or not spec.submodule_search_locations:
        raise TextError("the evaluation text ships in apache-tvm-ffi, which is not installed: "
                        "pip install -c constraints.txt apache-tvm-ffi (or pass --text FILE)")
    path = os.path.join(list(spec.submodule_search_locations)[0], *_RELATIVE)
    if not os.path.exists(path):
        raise TextError(f"'{path}' is missing from apache-tvm-ffi (pass --text FILE)")
    return path


def clean(raw: str) -> str:
    """Unwrap paragraphs and drop ``_`` italics markers."""
    paragraphs = re.split(r"\n\s*\n", raw.replace("\r\n", "\n"))
    out = [" ".join(p.replace("_", "").split()) for p in paragraphs]
    return "\n\n".join(p for p in out if p)


@functools.lru_cache(maxsize=1)
def _book() -> str:
    with open(text_path(), encoding="utf-8") as f:
        return f.read()


def opticks(split: Split = "test") -> str:
    """The cleaned calibration or test split of *Opticks* (see the module docstring)."""
    raw = _book()
    first = raw.find("THE FIRST BOOK OF OPTICKS")
    second = raw.find("SECOND BOOK")
    if first < 0 or second < first:
        raise TextError(f"'{text_path()}' is not the expected Opticks text (headings missing)")
    if split == "calibration":
        return clean(raw[first:second])
    if split == "test":
        return clean(raw[second:])
    raise ValueError(f"split must be 'test' or 'calibration', not {split!r}")


def read_text(path: str) -> str:
    """A user's own UTF-8 text file, cleaned the same way."""
    try:
        with open(path, encoding="utf-8") as f:
            return clean(f.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise TextError(f"cannot read the text file '{path}': {exc}") from exc
