"""The textual pipeline: parse ``name{key=value,...},name`` into steps and print it back.

Grammar::

    pipeline := [ step ( "," step )* ]
    step     := "fixpoint" [ options ] "(" pipeline ")"      -- repeat until nothing changes
              | NAME [ options ]
    options  := "{" [ KEY "=" value ( "," KEY "=" value )* ] "}"
    value    := "[" [ scalar ( "," scalar )* ] "]" | scalar
    scalar   := true | false | none | INT | FLOAT | WORD | "quoted string"

Examples: ``fold-batchnorm,fuse{activations=[relu,relu6]},dce`` and
``fixpoint{max_iterations=4}(cse,eliminate-identity,dce)``.

Printing is canonical and round-trips: options the text set are printed in the order it
set them, options set in code that differ from the default follow in field order, and
``format_pipeline(parse_pipeline(t)) == t`` for any canonical ``t`` (no spaces, shortest
number forms).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Union

from edgecc.errors import EdgeccError, PipelineSyntaxError, UnknownNameError
from edgecc.pass_base import Pass, make_options, option_fields
from edgecc.registry import Registry

_WORD = re.compile(r"[A-Za-z0-9_.+\-:/*]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.]*")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?inf|nan")

FIXPOINT = "fixpoint"


@dataclasses.dataclass(frozen=True)
class PassStep:
    """One pass with its options; ``given`` lists the option keys the text set, in order."""

    pass_cls: type[Pass]
    options: Any
    given: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.pass_cls.name


@dataclasses.dataclass(frozen=True)
class FixpointStep:
    """A group of steps repeated until none modifies the program (or the limit is hit)."""

    steps: tuple[Step, ...]
    max_iterations: int = 10

    name = FIXPOINT


Step = Union[PassStep, FixpointStep]


def step(pass_cls: type[Pass], **options: Any) -> PassStep:
    """Build a step in code: ``step(FoldBatchNorm)``, ``step(Fuse, activations=("relu",))``."""
    return PassStep(pass_cls, make_options(pass_cls, options), tuple(options))


class _Parser:
    def __init__(self, text: str, registry: Registry):
        self.text = text
        self.pos = 0
        self.registry = registry

    def error(self, problem: str, at: int | None = None) -> PipelineSyntaxError:
        return PipelineSyntaxError(self.text, self.pos if at is None else at, problem)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str, context: str) -> None:
        if self.peek() != char:
            found = f"'{self.peek()}'" if self.peek() else "end of text"
            raise self.error(f"expected '{char}' {context}, found {found}")
        self.pos += 1

    def name(self, what: str) -> tuple[str, int]:
        self.skip_ws()
        m = _NAME.match(self.text, self.pos)
        if not m:
            found = f"'{self.peek()}'" if self.peek() else "end of text"
            raise self.error(f"expected a {what}, found {found}")
        self.pos = m.end()
        return m.group(), m.start()

    def pipeline(self, closing: str) -> tuple[Step, ...]:
        steps: list[Step] = []
        if self.peek() in ("", closing):
            return ()
        while True:
            steps.append(self.step())
            c = self.peek()
            if c == ",":
                self.pos += 1
                continue
            if c == closing:
                return tuple(steps)
            if not c:
                raise self.error(f"expected '{closing}' to close fixpoint(...), found end of text")
            raise self.error(f"expected ',' between passes, found '{c}'")

    def step(self) -> Step:
        name, start = self.name("pass name")
        raw = self.options(name) if self.peek() == "{" else []
        if name == FIXPOINT:
            limit = 10
            for key, value, at in raw:
                if key != "max_iterations" or not isinstance(value, int) or value < 1:
                    raise self.error("fixpoint takes only max_iterations=<positive int>", at)
                limit = value
            self.expect("(", "after fixpoint")
            inner = self.pipeline(")")
            self.expect(")", "to close fixpoint(...)")
            return FixpointStep(inner, limit)
        try:
            pass_cls = self.registry.get(name)
        except UnknownNameError as exc:
            raise PipelineSyntaxError(self.text, start, str(exc)) from None
        values = {}
        for key, value, at in raw:
            if key in values:
                raise self.error(f"option '{key}' given twice", at)
            values[key] = value
        try:
            options = make_options(pass_cls, values)
        except EdgeccError as exc:
            at = next((a for k, _, a in raw if f"'{k}'" in str(exc)), start)
            raise PipelineSyntaxError(self.text, at, str(exc)) from None
        return PassStep(pass_cls, options, tuple(k for k, _, _ in raw))

    def options(self, owner: str) -> list[tuple[str, Any, int]]:
        self.expect("{", "")
        out: list[tuple[str, Any, int]] = []
        if self.peek() == "}":
            self.pos += 1
            return out
        while True:
            key, at = self.name(f"option name for '{owner}'")
            self.expect("=", f"after option '{key}'")
            out.append((key, self.value(), at))
            c = self.peek()
            if c == ",":
                self.pos += 1
                continue
            if c == "}":
                self.pos += 1
                return out
            raise self.error(
                f"expected ',' or '}}' after option '{key}', found "
                + (f"'{c}'" if c else "end of text")
            )

    def value(self) -> Any:
        if self.peek() == "[":
            self.pos += 1
            items: list[Any] = []
            if self.peek() == "]":
                self.pos += 1
                return items
            while True:
                items.append(self.scalar())
                c = self.peek()
                if c == ",":
                    self.pos += 1
                    continue
                if c == "]":
                    self.pos += 1
                    return items
                raise self.error("expected ',' or ']' in list")
        return self.scalar()

    def scalar(self) -> Any:
        c = self.peek()
        if c == '"':
            out, i = [], self.pos + 1
            while i < len(self.text):
                ch = self.text[i]
                if ch == "\\" and i + 1 < len(self.text):
                    out.append(self.text[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    self.pos = i + 1
                    return "".join(out)
                out.append(ch)
                i += 1
            raise self.error("unterminated string")
        m = _WORD.match(self.text, self.pos)
        if not m:
            raise self.error("expected a value")
        self.pos = m.end()
        return _interpret(m.group())


def _interpret(word: str) -> Any:
    low = word.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if _INT.fullmatch(word):
        return int(word)
    if _FLOAT.fullmatch(word):
        return float(word)
    return word


def parse_pipeline(text: str, registry: Registry | None = None) -> tuple[Step, ...]:
    """Parse pipeline text; errors point at the offending character."""
    from edgecc.registry import default_pass_registry

    parser = _Parser(text, registry or default_pass_registry())
    steps = parser.pipeline("")
    if parser.peek():
        raise parser.error(f"unexpected '{parser.peek()}'")
    return steps


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    text = str(value)
    if _WORD.fullmatch(text) and isinstance(_interpret(text), str):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_options(step_: PassStep) -> str:
    fields = option_fields(step_.pass_cls.Options)
    current = {name: getattr(step_.options, name) for name, _, _ in fields}
    keys = [k for k in step_.given if k in current]
    keys += [n for n, _, d in fields if n not in keys and current[n] != d]
    if not keys:
        return ""
    return "{" + ",".join(f"{k}={_format_value(current[k])}" for k in keys) + "}"


def format_step(s: Step) -> str:
    if isinstance(s, FixpointStep):
        opts = "" if s.max_iterations == 10 else f"{{max_iterations={s.max_iterations}}}"
        return f"{FIXPOINT}{opts}({format_pipeline(s.steps)})"
    return s.name + format_options(s)


def format_pipeline(steps: Sequence[Step]) -> str:
    return ",".join(format_step(s) for s in steps)


def flat_steps(steps: Sequence[Any]) -> list[PassStep]:
    """The pass steps of a parsed pipeline in order, fixpoint groups and nested pass
    managers opened up (targets check a pipeline against what they can hold)."""
    out: list[PassStep] = []
    for s in steps:
        if isinstance(s, PassStep):
            out.append(s)
        elif hasattr(s, "steps"):  # fixpoint groups, nested pass managers
            out += flat_steps(s.steps)
    return out
