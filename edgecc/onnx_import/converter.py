"""What an ONNX converter is and what it sees.

A converter turns one ONNX node into torch (hence ATen) operations. It is called as
``fn(ctx, *inputs) -> output | tuple of outputs``: ``ctx`` is the node's :class:`Ctx`
(attributes, opset, import-time constants); inputs are torch tensors, ``None`` for an
omitted optional input, or a :class:`ShapeValue` -- a 1-D (or scalar) int64 tensor held as
Python ints / SymInts, which is what ``Shape`` produces, so shape arithmetic
(``Shape -> Gather -> Concat -> Reshape``) stays symbolic under ``torch.export`` instead of
becoming data-dependent tensors.

Each op-family module in ``ops/`` lists its converters as :class:`Converter` entries;
``registry.py`` assembles them into the table the importer uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ConvertFn = Callable[..., Any]


def op_key(op_type: str, domain: str = "") -> str:
    """The table key of an operator: ``op_type`` in the default ONNX domain, else
    ``domain.op_type`` (e.g. ``com.microsoft.QGemm``)."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


@dataclass(frozen=True)
class Converter:
    """``fn`` converts ``op_type`` (in ``domain``, "" being the default ONNX domain) for
    default-domain opsets ``since_opset`` through ``until_opset`` (``None``: no upper bound)."""

    op_type: str
    fn: ConvertFn
    since_opset: int = 1
    until_opset: int | None = None
    domain: str = ""

    @property
    def key(self) -> str:
        return op_key(self.op_type, self.domain)

    def covers(self, opset: int) -> bool:
        return self.since_opset <= opset and (self.until_opset is None or opset <= self.until_opset)


class ShapeValue:
    """An int64 tensor known element-wise as Python ints / SymInts."""

    def __init__(self, values: Sequence[Any], scalar: bool = False, dtype: torch.dtype = torch.int64):
        self.values = list(values)
        self.scalar = scalar
        self.dtype = dtype  # torch.bool for a comparison of shapes (Equal)

    def tensor(self) -> torch.Tensor:
        if self.scalar:
            v = self.values[0]
            return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=self.dtype)
        if all(isinstance(v, (int, bool)) for v in self.values):
            return torch.tensor(self.values, dtype=self.dtype)
        return torch.stack([torch.as_tensor(v, dtype=self.dtype) for v in self.values])

    def __repr__(self) -> str:
        return f"ShapeValue({self.values}{', scalar' if self.scalar else ''})"


def T(x: Any) -> Any:
    """A converter input as a tensor (a :class:`ShapeValue` materialized)."""
    return x.tensor() if isinstance(x, ShapeValue) else x


ONNX_DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 12: torch.uint32,
    13: torch.uint64, 16: torch.bfloat16,
}


def numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    # Not np.ascontiguousarray: it turns a 0-d array (a scalar Constant) into shape (1,),
    # and a Gather by that index then keeps an axis it must drop.
    array = np.array(array, order="C", copy=True)
    if array.dtype == np.uint16 or array.dtype.kind in "OUS":
        raise NotImplementedError(f"tensor dtype {array.dtype}")
    return torch.from_numpy(array)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass(frozen=True)
class Ctx:
    """What a converter may ask about its node: attributes, static input values, opset.

    ``static_values`` maps a tensor name to its import-time value (a numpy array while the
    module runs -- torch.export fakes the module's tensors, converters need real numbers --
    or a real tensor while constant subgraphs are folded). ``formats`` names the quantized
    format of values whose dtype does not say it (4-bit, folded quantize outputs).
    """

    node: Any  # onnx.NodeProto
    opset: int
    static_values: Mapping[str, Any]
    formats: Mapping[str, str] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", _attributes(self.node))

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def static(self, i: int) -> Any:
        """The import-time value of input ``i`` (a numpy array or real tensor) if it is a
        constant, else None. Use ``.tolist()`` / ``.item()`` / ``int()`` on it."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        return self.static_values.get(self.node.input[i])

    def ints(self, i: int, value: Any) -> list[Any] | None:
        """Input ``i`` as a list of ints/SymInts (constant or shape value), or None if absent."""
        if value is None:
            return None
        if isinstance(value, ShapeValue):
            return list(value.values)
        const = self.static(i)
        if const is not None:
            return [int(v) for v in const.reshape(-1).tolist()]
        raise NotImplementedError(
            f"{self.node.op_type} node '{self.node.name}': input {i} must be known at import "
            "time (a constant or a shape), but it is computed from the data"
        )
