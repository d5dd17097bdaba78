"""decompose-composites: expand edgecc's fused composites back into ATen operators.

For targets without a fused kernel of their own (ONNX has no conv+activation operator;
runtimes such as onnxruntime fuse again themselves).

Before::

    %y = edgecc.conv_act(%x, @w, @b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, 'relu6')

After::

    %c = aten.convolution(%x, @w, @b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    %y = aten.hardtanh(%c, 0.0, 6.0)

Lossless: the composites are defined as exactly these operators (``edgecc.ops``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult
from edgecc.program import Program
from edgecc.rewrite import aten, copy_provenance, is_op

edgecc_ops = torch.ops.edgecc


def emit_activation(graph: fx.Graph, x: fx.Node, act: str) -> fx.Node:
    """ATen nodes computing ``act(x)`` with the semantics of ``edgecc.ops.apply_activation``."""
    table: dict[str, tuple[Any, tuple[Any, ...], dict[str, Any]]] = {
        "relu": (aten.relu.default, (), {}),
        "relu6": (aten.hardtanh.default, (0.0, 6.0), {}),
        "gelu": (aten.gelu.default, (), {}),
        "gelu_tanh": (aten.gelu.default, (), {"approximate": "tanh"}),
        "silu": (aten.silu.default, (), {}),
        "hardswish": (aten.hardswish.default, (), {}),
        "sigmoid": (aten.sigmoid.default, (), {}),
    }
    target, extra, kwargs = table[act]
    return graph.call_function(target, (x, *extra), kwargs)


class DecomposeComposites(Pass):
    """Expand edgecc.conv_act / edgecc.linear_act into ATen operators (lossless)."""

    name = "decompose-composites"
    Options = NoOptions

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        graph = program.graph
        count = 0
        for node in list(graph.nodes):
            if is_op(node, edgecc_ops.conv_act):
                base = (aten.convolution.default, tuple(node.args[:9]))
                act = node.args[9]
            elif is_op(node, edgecc_ops.linear_act):
                base = (aten.linear.default, tuple(node.args[:3]))
                act = node.args[3]
            else:
                continue
            with graph.inserting_before(node):
                inner = graph.call_function(*base)
                outer = emit_activation(graph, inner, act)
            copy_provenance(inner, node)
            copy_provenance(outer, node)
            node.replace_all_uses_with(outer)
            graph.erase_node(node)
            count += 1
        return PassResult(program, modified=count > 0, stats={"decomposed": count})
