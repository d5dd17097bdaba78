"""The pass interface: ``Pass``, its typed options, ``PassResult`` and ``PassContext``.

A pass is a small stateless class::

    @dataclass(frozen=True)
    class MyOptions:
        threshold: float = 0.5

    class MyPass(Pass):
        \"\"\"One-line summary (shown by ``edgecc passes``).\"\"\"
        name = "my-pass"
        Options = MyOptions

        def run(self, program, options, context):
            ...
            return PassResult(program, modified=True, stats={"rewritten": 3})

Calling a pass (``MyPass()(program, MyOptions(threshold=0.2))``) checks the options type,
runs ``validate``, ``requires``, ``run``, then the IR verifier and ``ensures``, and records
on every node the pass created which pass made it. Passes work in place (``in_place =
True``: ``run`` mutates and returns the program it was given) unless they declare otherwise;
the base class checks that claim.

The three checks, and what each raises:

* ``validate(program, options, context)`` -- options and context (a scheme the target
  cannot run, missing calibration data, no original model to distil from). A pipeline
  validates every pass before the first one runs, so bad input fails fast; its errors
  (``OptionError``, ``InputSpecError``) pass through unchanged. ``run`` relies on it and
  does not check again.
* ``requires(program, options)`` -- the program this pass is given, when it runs (what
  earlier passes must have done). Fails with ``PreconditionError``.
* ``ensures(program, options)`` -- the program the pass produced. Fails with
  ``PostconditionError``.

As in onnx-ir, anything else a ``requires`` / ``ensures`` raises is turned into the typed
error (naming the pass; the original is its ``__cause__``), so a caller catches one type.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from edgecc.errors import OptionError, PostconditionError, PreconditionError, one_line
from edgecc.program import ORIGIN, Program

if TYPE_CHECKING:  # edgecc.target imports this module
    from edgecc.target import Target


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Options of a pass that has none."""


@dataclasses.dataclass
class PassResult:
    """What a pass returns: the program, whether it changed, and what it measured."""

    program: Program
    modified: bool
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PassContext:
    """What a pipeline knows besides the program: calibration data and the target.

    ``calibration`` is an iterable of input tuples (lossy passes calibrate on it);
    ``target`` is the ``Target`` being compiled for, or ``None``; ``progress`` shows bars
    for long steps (``None``: when stderr is a terminal).
    """

    calibration: Iterable[tuple[Any, ...]] | None = None
    target: Target | None = None
    seed: int = 0
    progress: bool | None = None
    original: Any = None  # the program before any pass (teacher for qat / distillation)
    device: Any = None  # torch.device the calibration / training passes run on; None: CPU


class Pass:
    """Base class of every edgecc pass (see the module docstring)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    in_place: ClassVar[bool] = True
    lossless: ClassVar[bool] = True

    # -- to override ----------------------------------------------------------------------
    def validate(self, program: Program, options: Any, context: PassContext) -> None:
        """Check options and context (a scheme the target cannot execute, missing
        calibration data); a pipeline calls it for every pass before *any* runs."""

    def requires(self, program: Program, options: Any) -> None:
        """Raise ``PreconditionError`` if ``program`` is not something this pass accepts."""

    def ensures(self, program: Program, options: Any) -> None:
        """Raise ``PostconditionError`` if the pass did not establish what it promises."""

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        raise NotImplementedError

    # -- the driver -----------------------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def default_options(self) -> Any:
        return self.Options()

    def __call__(
        self,
        program: Program,
        options: Any = None,
        *,
        context: PassContext | None = None,
        verify: bool = True,
        validate: bool = True,
    ) -> PassResult:
        """Run the pass with its checks; ``validate=False`` when the caller (a pipeline)
        already validated options and context, ``verify=False`` skips the IR verifier."""
        options = self.default_options() if options is None else options
        if not isinstance(options, self.Options):
            raise OptionError(
                f"pass '{self.name}' takes {self.Options.__name__}, got {type(options).__name__}"
            )
        context = context or PassContext()
        if validate:
            self.validate(program, options, context)
        try:
            self.requires(program, options)
        except PreconditionError:
            raise
        except Exception as exc:
            raise PreconditionError(
                f"pass '{self.name}': precondition check failed: {one_line(exc)}") from exc
        before = {id(n) for n in program.graph.nodes}
        result = self.run(program, options, context)
        if not isinstance(result, PassResult):
            raise TypeError(f"pass '{self.name}' returned {type(result).__name__}, not PassResult")
        if self.in_place and result.program is not program:
            raise PostconditionError(
                f"pass '{self.name}' claims to work in place but returned a new program"
            )
        for node in result.program.graph.nodes:
            if id(node) not in before or ORIGIN not in node.meta:
                node.meta[ORIGIN] = self.name
        if result.modified:
            result.program.graph_module.recompile()
        if verify:
            result.program.verify()
        try:
            self.ensures(result.program, options)
        except PostconditionError:
            raise
        except Exception as exc:
            raise PostconditionError(
                f"pass '{self.name}': postcondition check failed: {one_line(exc)}") from exc
        return result


# -- options ------------------------------------------------------------------------------

def option_fields(options_cls: type) -> list[tuple[str, Any, Any]]:
    """``(name, type, default)`` of each field of an options dataclass."""
    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        out.append((f.name, hints.get(f.name, Any), default))
    return out


def coerce_option(pass_name: str, key: str, annotation: Any, value: Any) -> Any:
    """Convert a parsed option value to the field's declared type, or raise OptionError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    def fail(expected: str) -> OptionError:
        return OptionError(
            f"option '{key}' of '{pass_name}' must be {expected}, got {value!r}"
        )

    if annotation is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_option(pass_name, key, arg, value)
            except OptionError as exc:
                errors.append(exc)
        raise errors[0] if errors else fail(str(annotation))
    if origin is typing.Literal:
        if value in args:
            return value
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if origin in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args else Any
        return tuple(coerce_option(pass_name, key, inner, v) for v in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail("an integer")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail("a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # pipeline text parses `exclude=0` (a layer named "0") as 0
        raise fail("a string")
    return value


def make_options(owner: Any, values: Mapping[str, Any]) -> Any:
    """Build ``owner.Options`` (a pass or target class) from a mapping, checking names,
    types and ranges."""
    pass_cls = owner
    fields = {name: (ann, default) for name, ann, default in option_fields(pass_cls.Options)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            from edgecc.errors import UnknownNameError

            raise UnknownNameError(f"option of '{pass_cls.name}'", key, fields)
        kwargs[key] = coerce_option(pass_cls.name, key, fields[key][0], value)
    try:
        return pass_cls.Options(**kwargs)
    except (ValueError, TypeError) as exc:
        raise OptionError(f"'{pass_cls.name}': {exc}") from exc


# -- function passes ----------------------------------------------------------------------

def function_pass(
    name: str, *, options: type = NoOptions, lossless: bool = True
) -> Callable[[Callable[..., PassResult]], type[Pass]]:
    """Make a ``Pass`` class from a function ``fn(program, options, context) -> PassResult``.

        @function_pass("strip-clones")
        def strip_clones(program, options, context):
            ...
    """

    def wrap(fn: Callable[..., PassResult]) -> type[Pass]:
        def run(self: Pass, program: Program, opts: Any, context: PassContext) -> PassResult:
            return fn(program, opts, context)

        return type(
            fn.__name__,
            (Pass,),
            {"name": name, "Options": options, "lossless": lossless, "run": run,
             "__doc__": fn.__doc__, "__module__": fn.__module__},
        )

    return wrap
