"""attention-mask-to-additive: give scaled-dot-product attention a float (additive) mask.

Backends such as TVM Relax accept only additive float masks, and their softmax returns NaN
for a query row whose keys are all masked out, where PyTorch returns zeros. This
legalization rewrites a boolean mask (True = attend) into the additive form and guards
fully-masked rows so the result is exactly PyTorch's; a float mask gets the same guard
(rows that are -inf everywhere).

Before::

    %a = aten.scaled_dot_product_attention(%q, %k, %v, %bool_mask)

After::

    %m     = aten.where(%bool_mask, 0.0, -inf)                 # float, dtype of %q
    %a     = aten.scaled_dot_product_attention(%q, %k, %v, %m)
    %valid = aten.any(%bool_mask, -1, keepdim=True)            # a row attends somewhere
    %out   = aten.where(%valid, %a, 0.0)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult
from edgecc.program import Program
from edgecc.rewrite import aten, copy_provenance, is_op, val

GUARDED = "edgecc_mask_guarded"


class AttentionMaskToAdditive(Pass):
    """Rewrite SDPA masks into additive float masks with PyTorch's fully-masked-row semantics."""

    name = "attention-mask-to-additive"
    Options = NoOptions

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        graph = program.graph
        rewritten = 0
        for node in list(graph.nodes):
            if not is_op(node, aten.scaled_dot_product_attention) or node.meta.get(GUARDED):
                continue
            mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
            mv, qv = val(mask), val(node.args[0])
            if not isinstance(mask, fx.Node) or mv is None or qv is None:
                continue
            dtype = qv.dtype
            new: list[fx.Node] = []
            with graph.inserting_before(node):
                if mv.dtype == torch.bool:
                    keep = mask
                    zero = _scalar(graph, 0.0, dtype)
                    ninf = _scalar(graph, float("-inf"), dtype)
                    additive = graph.call_function(aten.where.self, (mask, zero, ninf))
                    new += [zero, ninf, additive]
                    self._set_mask(node, additive)
                else:
                    keep = graph.call_function(aten.ne.Scalar, (mask, float("-inf")))
                    new.append(keep)
                valid = graph.call_function(aten.any.dim, (keep, -1, True))
                new.append(valid)
            with graph.inserting_after(node):
                out_zero = _scalar(graph, 0.0, dtype)
            with graph.inserting_after(out_zero):
                guarded = graph.call_function(aten.where.self, (valid, node, out_zero))
            node.replace_all_uses_with(guarded, delete_user_cb=_is_not(guarded))
            for n in (*new, out_zero, guarded):
                copy_provenance(n, node)
            node.meta[GUARDED] = True
            rewritten += 1
        return PassResult(program, modified=rewritten > 0, stats={"rewritten": rewritten})

    @staticmethod
    def _set_mask(node: fx.Node, mask: fx.Node) -> None:
        if len(node.args) > 3:
            args = list(node.args)
            args[3] = mask
            node.args = tuple(args)
        else:
            node.kwargs = {**node.kwargs, "attn_mask": mask}


def _scalar(graph: fx.Graph, value: float, dtype: torch.dtype) -> fx.Node:
    return graph.call_function(aten.scalar_tensor.default, (value,), {"dtype": dtype})


def _is_not(node: fx.Node) -> Any:
    return lambda user: user is not node
