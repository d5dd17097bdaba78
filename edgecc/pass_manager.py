"""``PassManager``: runs a pipeline of passes with instruments.

The manager is itself a ``Pass``, so pipelines nest (a manager can be a step of another);
``fixpoint(...)`` groups repeat until none of their passes modifies the program. A nested
manager's passes run as steps of the outermost run: with its instruments (a numeric check
or an IR dump sees every pass, however deep) and its ``verify_each``; the nested manager's
own instruments see them too. Every step is recorded (pass, options as pipeline text,
modified, stats, seconds) for the manifest. When a pass raises, the error names it and the
passes that already ran.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every pass of one pipeline run shares, nested managers' passes included."""

    context: PassContext
    instruments: tuple[Instrument, ...]
    verify_each: bool
    records: list[dict[str, Any]]

    def entering(self, inner: PassManager) -> _Run:
        """The run for a nested manager's steps: the outer instruments and verification,
        plus the nested manager's own instruments (each instrument called once)."""
        extra = tuple(i for i in inner.instruments
                      if not any(i is j for j in self.instruments))
        return dataclasses.replace(self, instruments=self.instruments + extra)


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
        run = _Run(context or PassContext(), self.instruments, self.verify_each, [])
        _validate(self.steps, program, run.context)
        modified = _run_steps(self.steps, program, run, "")
        return PassResult(program, modified, {"passes": run.records})

    def __call__(self, program: Program, options: Any = None, *,
                 context: PassContext | None = None, verify: bool = True,
                 validate: bool = True) -> PassResult:
        return self.run(program, options, context)


# -- internals ----------------------------------------------------------------------------

def _validate(steps: Sequence[ManagerStep], program: Program, context: PassContext) -> None:
    """Every pass's ``validate``, before any pass runs (bad options fail fast)."""
    for s in steps:
        if isinstance(s, PassManager):
            _validate(s.steps, program, context)
        elif isinstance(s, FixpointStep):
            _validate(s.steps, program, context)
        else:
            try:
                s.pass_cls().validate(program, s.options, context)
            except EdgeccError as exc:
                exc.add_context(f"(in pass '{s.name}', checked before running any pass)")
                raise


def _run_steps(steps: Sequence[ManagerStep], program: Program, run: _Run,
               prefix: str) -> bool:
    modified = False
    for s in steps:
        if isinstance(s, PassManager):
            modified |= _run_steps(s.steps, program, run.entering(s), prefix)
        elif isinstance(s, FixpointStep):
            modified |= _run_fixpoint(s, program, run, prefix)
        else:
            modified |= _run_pass(s, program, run, prefix)
    return modified


def _run_fixpoint(s: FixpointStep, program: Program, run: _Run, prefix: str) -> bool:
    any_change = False
    for i in range(s.max_iterations):
        changed = _run_steps(s.steps, program, run, f"{prefix}fixpoint[{i}]/")
        any_change |= changed
        if not changed:
            break
    return any_change


def _run_pass(s: PassStep, program: Program, run: _Run, prefix: str) -> bool:
    pass_ = s.pass_cls()
    label = prefix + s.name
    for inst in run.instruments:
        inst.before_pass(label, pass_, program)
    start = time.perf_counter()
    try:
        # validate ran for the whole pipeline before the first pass
        result = pass_(program, s.options, context=run.context, verify=run.verify_each,
                       validate=False)
    except NumericCheckError:
        raise
    except EdgeccError as exc:
        exc.add_context(_already_run(run.records, label))
        raise
    except Exception as exc:
        raise PassFailedError(
            f"pass '{label}' failed: {one_line(exc)} {_already_run(run.records, label)}"
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
    run.records.append(record)
    for inst in run.instruments:
        inst.after_pass(label, pass_, program, result, record)
    return result.modified


def _already_run(records: list[dict[str, Any]], label: str) -> str:
    done = [r["pass"] for r in records]
    return f"(in pass '{label}'; passes already run: {', '.join(done) if done else 'none'})"
