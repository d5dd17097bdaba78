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

from edgecc.pass_base import NoOptions
from edgecc.rewrite import Match, RewritePass, RewriteReport, RewriteRule, aten, copy_provenance

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


def _decompose(m: Match) -> fx.Node:
    graph, node = m.program.graph, m.root
    with graph.inserting_before(node):
        inner = graph.call_function(m.base, m.base_args)
        outer = emit_activation(graph, inner, m.act)
    copy_provenance(inner, node)
    return outer


CONV_ACT = RewriteRule(
    name="conv-act",
    anchors=(edgecc_ops.conv_act,),
    match=lambda program, node: {"base": aten.convolution.default,
                                 "base_args": tuple(node.args[:9]), "act": node.args[9]},
    replacement=_decompose,
)
LINEAR_ACT = RewriteRule(
    name="linear-act",
    anchors=(edgecc_ops.linear_act,),
    match=lambda program, node: {"base": aten.linear.default,
                                 "base_args": tuple(node.args[:3]), "act": node.args[3]},
    replacement=_decompose,
)


class DecomposeComposites(RewritePass):
    """Expand edgecc.conv_act / edgecc.linear_act into ATen operators (lossless)."""

    name = "decompose-composites"
    Options = NoOptions

    def rules(self, options: NoOptions) -> list[RewriteRule]:
        return [CONV_ACT, LINEAR_ACT]

    def stats(self, report: RewriteReport) -> dict[str, Any]:
        return {"decomposed": report.matched("conv-act", "linear-act")}
