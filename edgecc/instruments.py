"""Pass instruments: hooks the pass manager calls around every pass.

* ``TimingInstrument`` -- seconds per pass, as a table;
* ``IRDumpInstrument`` -- writes the program's text after chosen passes;
* ``NumericCheckInstrument`` -- runs the program on fixed inputs after every pass and
  compares with the previous stage, so the pass that corrupts the model is the one named.
  Lossless passes must stay within tolerance; lossy passes have their error recorded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
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
