"""attention-mask-to-additive: give scaled-dot-product attention a float (additive) mask.

Backends such as TVM Relax accept only additive float masks; PyTorch also allows a boolean
mask (True = attend). This legalization rewrites the boolean form into the float one with
exactly PyTorch's semantics (masked-out scores become -inf before the softmax).

Before::

    %a = aten.scaled_dot_product_attention(%q, %k, %v, %bool_mask)

After::

    %m = aten.where(%bool_mask, 0.0, -inf)        # float, same dtype as %q
    %a = aten.scaled_dot_product_attention(%q, %k, %v, %m)
"""

from __future__ import annotations

from typing import Any

import torch

from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult
from edgecc.program import Program
from edgecc.rewrite import aten, copy_provenance, is_op, val


class AttentionMaskToAdditive(Pass):
    """Rewrite boolean attention masks of SDPA into additive float masks (lossless)."""

    name = "attention-mask-to-additive"
    Options = NoOptions

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        graph = program.graph
        rewritten = 0
        for node in list(graph.nodes):
            if not is_op(node, aten.scaled_dot_product_attention):
                continue
            mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
            mv, qv = val(mask), val(node.args[0])
            if mv is None or qv is None or mv.dtype != torch.bool:
                continue
            dtype = qv.dtype
            with graph.inserting_before(node):
                zero = graph.call_function(aten.scalar_tensor.default, (0.0,), {"dtype": dtype})
                ninf = graph.call_function(aten.scalar_tensor.default, (float("-inf"),),
                                           {"dtype": dtype})
                additive = graph.call_function(aten.where.self, (mask, zero, ninf))
            for n in (zero, ninf, additive):
                copy_provenance(n, node)
            if len(node.args) > 3:
                args = list(node.args)
                args[3] = additive
                node.args = tuple(args)
            else:
                node.kwargs = {**node.kwargs, "attn_mask": additive}
            rewritten += 1
        return PassResult(program, modified=rewritten > 0, stats={"rewritten": rewritten})
