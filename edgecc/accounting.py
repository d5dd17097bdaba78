"""Size and cost accounting: parameters, bytes and multiply-accumulates of a ``Program``.

MACs are counted for the operators that dominate inference cost (convolutions, linear and
matrix products, attention), from the shapes in node metadata; symbolic dimensions are
counted at their example value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.fx as fx

from edgecc.program import Program, concrete_shape, op_name


@dataclasses.dataclass(frozen=True)
class ModelSize:
    parameters: int  # elements of all weights the graph reads
    bytes: int  # their storage in bytes
    macs: int  # multiply-accumulates of one forward at the example shapes
    operators: int  # compute operators (call_function nodes other than getitem/sym_size)

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _numel(val: Any) -> int:
    return math.prod(concrete_shape(val.shape)) if isinstance(val, torch.Tensor) else 0


def _shape(node: Any) -> tuple[int, ...]:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return concrete_shape(val.shape) if isinstance(val, torch.Tensor) else ()


def node_macs(node: fx.Node) -> int:
    """Multiply-accumulates of one call, 0 for operators not counted."""
    name = op_name(node)
    out = node.meta.get("val")
    if name in ("aten.convolution", "edgecc.conv_act"):
        w = _shape(node.args[1])
        transposed = bool(node.args[6])
        if transposed:  # every input element scatters into Cout/groups * k outputs
            return _numel(node.args[0].meta.get("val")) * math.prod(w[1:])
        return _numel(out) * math.prod(w[1:]) if w else 0
    if name in ("aten.linear", "edgecc.linear_act"):
        w = _shape(node.args[1])
        return _numel(out) * (w[1] if len(w) == 2 else 1)
    if name in ("aten.mm", "aten.bmm", "aten.matmul"):
        a = _shape(node.args[0])
        return _numel(out) * (a[-1] if a else 1)
    if name == "aten.addmm":
        a = _shape(node.args[1])
        return _numel(out) * (a[-1] if a else 1)
    if name == "aten.scaled_dot_product_attention":
        q, k = _shape(node.args[0]), _shape(node.args[1])
        if len(q) >= 2 and len(k) >= 2:
            # Q·Kᵀ and P·V: both L x S x E per batch-head.
            return 2 * math.prod(q) * k[-2]
    return 0


def measure(program: Program) -> ModelSize:
    params = 0
    nbytes = 0
    seen: set[str] = set()
    for node in program.nodes("get_attr"):
        if node.target in seen:
            continue
        seen.add(str(node.target))
        value = program.tensor(node)
        if isinstance(value, torch.Tensor):
            params += value.numel()
            nbytes += value.numel() * value.element_size()
    macs = sum(node_macs(n) for n in program.nodes("call_function"))
    operators = sum(1 for n in program.nodes("call_function")
                    if op_name(n) not in ("getitem", "aten.sym_size"))
    return ModelSize(parameters=params, bytes=nbytes, macs=macs, operators=operators)

