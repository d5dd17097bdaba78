"""Pass instruments: hooks the pass manager calls around every pass.

* ``TimingInstrument`` -- seconds per pass, as a table;
* ``IRDumpInstrument`` -- writes the program's text after chosen passes;
* ``NumericCheckInstrument`` -- runs the program on fixed inputs after every pass and
  compares with the previous stage, so the pass that corrupts the model is the one named.
  Lossless passes must stay within tolerance; lossy passes have their error recorded.

And the compile clock (``StageClock``, ``stage_timer``): wall seconds per compile stage
(load, passes, lowering, verify, write) for the manifest's ``compile_seconds``; a target
reports the parts of its lowering (``tvm import``, ``tvm relax passes``, ``tvm codegen``,
``tvm link``) with ``stage_timer`` without knowing who listens::

    with StageClock() as clock:                  # edgecc.compile
        clock.begin("load"); ...
        clock.begin("lowering")
        with stage_timer("tvm link"):            # deep inside a target: recorded under
            ...                                  # the running stage as a part
    clock.to_json()  # {"load": 1.2, ..., "parts": {"lowering": {"tvm link": 0.4}}, ...}
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from edgecc.errors import NumericCheckError
from edgecc.metrics import compare_outputs


class Instrument:
    """Base class: override either hook."""

    def before_pass(self, label: str, pass_: Any, program: Any) -> None:
        pass

    def after_pass(self, label: str, pass_: Any, program: Any, result: Any,
                   record: dict[str, Any]) -> None:
        pass


class TimingInstrument(Instrument):
    """Collects ``(pass, seconds)``; ``table()`` renders them."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    def after_pass(self, label, pass_, program, result, record) -> None:
        self.timings.append((label, record["seconds"]))

    def table(self) -> str:
        width = max((len(n) for n, _ in self.timings), default=4)
        rows = [f"{n:<{width}}  {s * 1000:9.1f} ms" for n, s in self.timings]
        total = sum(s for _, s in self.timings)
        return "\n".join(rows + [f"{'total':<{width}}  {total * 1000:9.1f} ms"])


class IRDumpInstrument(Instrument):
    """Write ``NN-<pass>.txt`` (the program's text) after each pass named in ``after``.

    ``after=None`` dumps after every pass; the program before the first pass is written
    as ``00-input.txt``.
    """

    def __init__(self, directory: str, after: Iterable[str] | None = None):
        self.directory = directory
        self.after = None if after is None else set(after)
        self.count = 0
        os.makedirs(directory, exist_ok=True)

    def before_pass(self, label, pass_, program) -> None:
        if self.count == 0:
            self._write("input", program)

    def after_pass(self, label, pass_, program, result, record) -> None:
        self.count += 1
        name = label.rsplit("/", 1)[-1]
        if self.after is None or name in self.after:
            self._write(label.replace("/", "_"), program)

    def _write(self, label: str, program: Any) -> None:
        path = os.path.join(self.directory, f"{self.count:02d}-{label}.txt")
        with open(path, "w") as f:
            f.write(str(program) + "\n")


class NumericCheckInstrument(Instrument):
    """Compare each stage's outputs with the previous stage on fixed inputs.

    Raises ``NumericCheckError`` naming the pass when a lossless pass moves any output by
    more than ``atol + rtol * |reference|``; the error metrics of every pass are added to
    its record under ``numeric_check``.
    """

    def __init__(self, inputs: Sequence[Sequence[torch.Tensor]], *, atol: float = 1e-4,
                 rtol: float = 1e-4):
        self.inputs = [tuple(x) for x in inputs]
        self.atol = atol
        self.rtol = rtol
        self.reference: list[tuple[torch.Tensor, ...]] | None = None

    def _outputs(self, program: Any) -> list[tuple[torch.Tensor, ...]]:
        return [program.run(*x) for x in self.inputs]

    def before_pass(self, label, pass_, program) -> None:
        if self.reference is None:
            self.reference = self._outputs(program)

    def after_pass(self, label, pass_, program, result, record) -> None:
        assert self.reference is not None
        current = self._outputs(program)
        metrics = compare_outputs(self.reference, current, atol=self.atol, rtol=self.rtol)
        record["numeric_check"] = metrics
        if getattr(pass_, "lossless", True) and not metrics["passed"]:
            raise NumericCheckError(
                f"pass '{label}' changed the model's outputs: max-abs error "
                f"{metrics['max_abs']:.3g}, max-rel {metrics['max_rel']:.3g} exceed "
                f"atol={self.atol:g}, rtol={self.rtol:g} (a lossless pass must preserve them)"
            )
        self.reference = current


_CLOCK: contextvars.ContextVar[StageClock | None] = contextvars.ContextVar(
    "edgecc_stage_clock", default=None)


class StageClock:
    """Wall seconds of a compile's stages, in order, and of the parts a stage's code
    reports through ``stage_timer`` while it runs (see the module docstring). ``begin``
    closes the running stage and opens the next (like a progress bar's stages); a stage
    that runs twice adds up; parts are recorded under the running stage."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}
        self.parts: dict[str, dict[str, float]] = {}
        self._running: tuple[str, float] | None = None
        self._token: Any = None

    def __enter__(self) -> StageClock:
        self._token = _CLOCK.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end()
        _CLOCK.reset(self._token)

    def begin(self, name: str) -> None:
        self.end()
        self._running = (name, time.perf_counter())

    def end(self) -> None:
        if self._running is not None:
            name, t0 = self._running
            self._running = None
            self.record(name, time.perf_counter() - t0)

    def record(self, name: str, seconds: float) -> None:
        """Add ``seconds`` measured elsewhere to stage ``name``."""
        self.stages[name] = self.stages.get(name, 0.0) + seconds

    def add_part(self, name: str, seconds: float, stage: str | None = None) -> None:
        """Add ``seconds`` to part ``name`` of ``stage`` (default: the running stage)."""
        stage = stage or (self._running[0] if self._running else "other")
        owner = self.parts.setdefault(stage, {})
        owner[name] = owner.get(name, 0.0) + seconds

    def total(self) -> float:
        return time.perf_counter() - self.start

    def to_json(self, digits: int = 3) -> dict[str, Any]:
        """``{stage: seconds, ..., "total": wall seconds since the clock started,
        "parts": {stage: {part: seconds}}}`` (the running stage counted up to now); the
        stages sum to at most the total."""
        now = time.perf_counter()
        stages = dict(self.stages)
        if self._running is not None:
            name, t0 = self._running
            stages[name] = stages.get(name, 0.0) + now - t0
        scale = 10 ** digits  # stages rounded down, the total up: they still sum within it
        out: dict[str, Any] = {k: math.floor(v * scale) / scale for k, v in stages.items()}
        out["total"] = math.ceil((now - self.start) * scale) / scale
        if self.parts:
            out["parts"] = {k: {p: round(s, digits) for p, s in v.items()}
                            for k, v in self.parts.items()}
        return out


@contextlib.contextmanager
def stage_timer(name: str) -> Iterator[None]:
    """Time a part of the current compile stage (a no-op cost when nothing listens)."""
    clock = _CLOCK.get()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if clock is not None:
            clock.add_part(name, time.perf_counter() - t0)


def record_stage_part(name: str, seconds: float) -> None:
    """Record an already measured part of the current compile stage (e.g. a tool that
    reports its own seconds)."""
    clock = _CLOCK.get()
    if clock is not None:
        clock.add_part(name, seconds)
