"""``PassManager``: runs a pipeline of passes with instruments.

The manager is itself a ``Pass``, so pipelines nest (a manager can be a step of another);
``fixpoint(...)`` groups repeat until none of their passes modifies the program. Every
step is recorded (pass, options as pipeline text, modified, stats, seconds) for the
manifest. When a pass raises, the error names it and the passes that already ran.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Union

from edgecc.errors import EdgeccError, NumericCheckError, PassFailedError, one_line
from edgecc.instruments import Instrument
from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult
from edgecc.pipeline_text import FixpointStep, PassStep, format_options, parse_pipeline
from edgecc.program import Program
from edgecc.registry import Registry

ManagerStep = Union[PassStep, FixpointStep, "PassManager"]


class PassManager(Pass):
    """Run a sequence of passes (text or steps) with instruments."""

    name = "pipeline"
    Options = NoOptions

    def __init__(
        self,
        steps: str | Sequence[ManagerStep],
        *,
        instruments: Sequence[Instrument] = (),
        verify_each: bool = True,
        registry: Registry | None = None,
    ):
        self.steps: tuple[ManagerStep, ...] = (
            parse_pipeline(steps, registry) if isinstance(steps, str) else tuple(steps)
        )
        self.instruments = tuple(instruments)
        self.verify_each = verify_each

    def run(self, program: Program, options: Any = None,
            context: PassContext | None = None) -> PassResult:
        context = context or PassContext()
        records: list[dict[str, Any]] = []
        self._validate(self.steps, program, context)
        modified = self._run_steps(self.steps, program, context, records, "")
        return PassResult(program, modified, {"passes": records})

    def __call__(self, program: Program, options: Any = None, *,
                 context: PassContext | None = None, verify: bool = True) -> PassResult:
        return self.run(program, options, context)

    # -- internals ------------------------------------------------------------------------
    def _validate(self, steps: Sequence[ManagerStep], program: Program,
                  context: PassContext) -> None:
        for s in steps:
            if isinstance(s, PassManager):
                s._validate(s.steps, program, context)
            elif isinstance(s, FixpointStep):
                self._validate(s.steps, program, context)
            else:
                try:
                    s.pass_cls().validate(program, s.options, context)
                except EdgeccError as exc:
                    raise _with_context(exc, "(checked before running any pass)") from exc

    def _run_steps(self, steps: Sequence[ManagerStep], program: Program, context: PassContext,
                   records: list[dict[str, Any]], prefix: str) -> bool:
        modified = False
        for s in steps:
            if isinstance(s, PassManager):
                modified |= s._run_steps(s.steps, program, context, records, prefix)
            elif isinstance(s, FixpointStep):
                modified |= self._run_fixpoint(s, program, context, records, prefix)
            else:
                modified |= self._run_pass(s, program, context, records, prefix)
        return modified

    def _run_fixpoint(self, s: FixpointStep, program: Program, context: PassContext,
                      records: list[dict[str, Any]], prefix: str) -> bool:
        any_change = False
        for i in range(s.max_iterations):
            changed = self._run_steps(s.steps, program, context, records,
                                      f"{prefix}fixpoint[{i}]/")
            any_change |= changed
            if not changed:
                break
        return any_change

    def _run_pass(self, s: PassStep, program: Program, context: PassContext,
                  records: list[dict[str, Any]], prefix: str) -> bool:
        pass_ = s.pass_cls()
        label = prefix + s.name
        for inst in self.instruments:
            inst.before_pass(label, pass_, program)
        start = time.perf_counter()
        try:
            result = pass_(program, s.options, context=context, verify=self.verify_each)
        except NumericCheckError:
            raise
        except EdgeccError as exc:
            raise _with_context(exc, _already_run(records, label)) from exc
        except Exception as exc:
            raise PassFailedError(
                f"pass '{label}' failed: {one_line(exc)} {_already_run(records, label)}"
            ) from exc
        seconds = time.perf_counter() - start
        record = {
            "pass": label,
            "options": format_options(s).strip("{}"),
            "modified": result.modified,
            "lossless": bool(getattr(pass_, "lossless", True)),
            "stats": result.stats,
            "seconds": round(seconds, 4),
        }
        records.append(record)
        for inst in self.instruments:
            inst.after_pass(label, pass_, program, result, record)
        return result.modified


def _already_run(records: list[dict[str, Any]], label: str) -> str:
    done = [r["pass"] for r in records]
    return f"(in pass '{label}'; passes already run: {', '.join(done) if done else 'none'})"


def _with_context(exc: EdgeccError, text: str) -> EdgeccError:
    if text in str(exc):
        return exc
    new = exc.__class__.__new__(exc.__class__)
    Exception.__init__(new, f"{exc} {text}")
    return new
