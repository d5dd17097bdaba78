"""One helper for the NPU legalization passes: give float values an int8 quantize ->
dequantize pair, calibrated (min/max on the calibration batches) or at fixed parameters.

``npu-quantize-layer-outputs`` (``legalize.py``) and ``npu-decompose-attention``
(``attention.py``) both turn float values into the int8 values an NPU region reads or writes.

Before::

    %v = op(...)                      # float
    %c = consumer(%v)

After::

    %v = op(...)
    %c = consumer(dq(q(%v, s, z)))    # s, z: from the observed [min, max] (always covering 0)

Lossy: each value moves by at most half a step (``s / 2``) inside the calibrated range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from edgecc.program import Program
from edgecc.quant import QuantParams, scale_from_range


@dataclasses.dataclass(frozen=True)
class QdqPoint:
    """Where to insert one int8 pair: ``value`` read by ``consumers`` (all its readers when
    None); ``fixed`` (scale, zero point) skips calibration; ``min_span`` widens the
    calibrated range downwards to at least that width below its maximum."""

    value: fx.Node
    consumers: tuple[fx.Node, ...] | None = None
    fixed: tuple[float, int] | None = None
    min_span: float = 0.0


def insert_int8_qdq(program: Program, points: Sequence[QdqPoint], batches: Sequence[Any],
                    symmetric: bool, desc: str = "calibrating") -> int:
    """Insert ``points``' quantize -> dequantize pairs (int8 per tensor; zero point 0 when
    ``symmetric``); returns how many needed calibration."""
    from edgecc.passes.quantize.layers import insert_qdq, record_values

    observe = list(dict.fromkeys(p.value for p in points if p.fixed is None))
    lo: dict[fx.Node, torch.Tensor] = {}
    hi: dict[fx.Node, torch.Tensor] = {}

    def on_value(n: fx.Node, v: torch.Tensor) -> None:
        lo[n] = torch.minimum(lo.get(n, v.min()), v.min())
        hi[n] = torch.maximum(hi.get(n, v.max()), v.max())

    if observe:
        program.graph_module.recompile()
        record_values(program, batches, observe, on_value, desc=desc)
    for p in points:
        if p.fixed is not None:
            scale, zp = torch.tensor(float(p.fixed[0])), torch.tensor(int(p.fixed[1]))
        else:
            low = lo[p.value]
            if p.min_span:
                low = torch.minimum(low, hi[p.value] - p.min_span)
            scale, zp = scale_from_range(low, hi[p.value], "int8", symmetric=symmetric)
        consumers = list(p.value.users) if p.consumers is None else list(p.consumers)
        insert_qdq(program, p.value, consumers, QuantParams("int8", scale, zp.to(torch.int8)))
    return len(observe)
