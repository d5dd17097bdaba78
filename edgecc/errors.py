"""Errors edgecc raises for things the user can fix.

Every ``EdgeccError`` renders as one line that says what was wrong, where, and what to do;
the CLI prints it and exits with code 2 (no traceback unless ``--debug``). Anything else that
escapes is a bug in edgecc and exits with code 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeccError(Exception):
    """Base class of user-facing errors (bad input, bad options, failed checks).

    ``context`` holds where the error happened, added by whoever catches it on the way
    up (the pass manager: the pass and the passes already run) with ``add_context``; the
    exception itself, its type and its attributes (``suggestion``, ``position``, ...) are
    never rebuilt. ``str()`` is the message followed by the context, one line.
    """

    exit_code = 2

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.context: list[str] = []

    def add_context(self, text: str) -> None:
        """Say where the error happened; the same text twice (nested callers) is kept once."""
        if text not in self.context:
            self.context.append(text)

    def __str__(self) -> str:
        message = super().__str__()
        return " ".join([message, *self.context]) if self.context else message


class ModelLoadError(EdgeccError):
    """A model file is missing, corrupt, of an unknown kind, or unsafe to load."""


class InputSpecError(EdgeccError):
    """Inputs given to a program do not match its input specs (number, shape, dtype)."""


class UnknownNameError(EdgeccError):
    """A pass, target, recipe or preset name is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known) or 'none'}"
        super().__init__(f"unknown {kind} '{name}': {hint}")
        self.name = name
        self.suggestion = close[0] if close else None


class DuplicateNameError(EdgeccError):
    """Two passes or targets were registered under the same name."""


class OptionError(EdgeccError):
    """An option value is of the wrong type or outside its allowed range."""


class PipelineSyntaxError(EdgeccError):
    """Pipeline text that does not parse; the message marks the offending character."""

    def __init__(self, text: str, position: int, problem: str):
        position = max(0, min(position, len(text)))
        marked = f"{text[:position]}⟦{text[position:position + 1]}⟧{text[position + 1:]}"
        super().__init__(
            f"malformed pipeline at character {position + 1}: {problem}: {marked}"
        )
        self.text = text
        self.position = position


class OutputDirError(EdgeccError):
    """The output directory cannot be used (exists and is not empty, not writable)."""


class PreconditionError(EdgeccError):
    """A pass's ``requires`` check rejected the program it was given."""


class PostconditionError(EdgeccError):
    """A pass's ``ensures`` check rejected the program the pass produced."""


class ProgramVerificationError(EdgeccError):
    """The IR verifier found an inconsistent program (lint, metadata, signature)."""


class PassFailedError(EdgeccError):
    """A pass raised; names the pass and those that already ran."""


class NumericCheckError(EdgeccError):
    """A pass changed the model's outputs beyond tolerance (names the pass)."""


class TargetUnavailableError(EdgeccError):
    """A target's toolchain is not installed on this machine."""


class LoweringError(EdgeccError):
    """A target could not lower the program (unsupported operators, toolchain failure)."""


class VerificationFailedError(EdgeccError):
    """The compiled artifact's outputs differ from the original model beyond tolerance."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, for wrapping third-party errors."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
