"""cse: common-subexpression elimination -- compute each pure expression once.

Before::

    %a = aten.mul(%x, 2.0)
    %b = aten.mul(%x, 2.0)
    %y = aten.add(%a, %b)

After::

    %a = aten.mul(%x, 2.0)
    %y = aten.add(%a, %a)

Two nodes merge when they call the same operator on the same arguments (after earlier
merges) with the same keyword arguments; ``get_attr`` nodes reading the same weight merge
too. Random and mutating operators never merge. Lossless.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult
from edgecc.program import Program
from edgecc.rewrite import is_pure


def _key(value: Any) -> Any:
    if isinstance(value, fx.Node):
        return ("node", id(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _key(v)) for k, v in value.items())))
    if isinstance(value, float) and value != value:
        return ("nan",)
    if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return ("torch", str(value))
    return (type(value).__name__, value)


class CommonSubexpressionElimination(Pass):
    """Merge identical pure computations (lossless)."""

    name = "cse"
    Options = NoOptions

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        graph = program.graph
        seen: dict[Any, fx.Node] = {}
        merged = 0
        for node in list(graph.nodes):
            if node.op == "get_attr":
                key = ("get_attr", node.target)
            elif is_pure(node):
                key = (node.target, _key(node.args), _key(node.kwargs))
            else:
                continue
            first = seen.get(key)
            if first is None:
                seen[key] = node
                continue
            node.replace_all_uses_with(first)
            graph.erase_node(node)
            merged += 1
        return PassResult(program, modified=merged > 0, stats={"merged": merged})
