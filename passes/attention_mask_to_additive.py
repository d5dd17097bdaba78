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

from edgecc.pass_base import NoOptions
from edgecc.rewrite import (
    Match, RewritePass, RewriteReport, RewriteRule, aten, copy_provenance, val,
)

GUARDED = "edgecc_mask_guarded"


def _masked_sdpa(is_bool: bool) -> Any:
    """``match`` of an SDPA not yet guarded whose mask is boolean (or float)."""

    def match(program: Any, node: fx.Node) -> dict[str, Any] | None:
        mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
        mv, qv = val(mask), val(node.args[0])
        if node.meta.get(GUARDED) or not isinstance(mask, fx.Node) or mv is None or qv is None:
            return None
        if (mv.dtype == torch.bool) != is_bool:
            return None
        return {"mask": mask, "dtype": qv.dtype}

    return match


def _guard(m: Match) -> None:
    graph, node, mask, dtype = m.program.graph, m.root, m.mask, m.dtype
    new: list[fx.Node] = []
    with graph.inserting_before(node):
        if val(mask).dtype == torch.bool:
            keep = mask
            zero = _scalar(graph, 0.0, dtype)
            ninf = _scalar(graph, float("-inf"), dtype)
            additive = graph.call_function(aten.where.self, (mask, zero, ninf))
            new += [zero, ninf, additive]
            _set_mask(node, additive)
        else:
            keep = graph.call_function(aten.ne.Scalar, (mask, float("-inf")))
            new.append(keep)
        valid = graph.call_function(aten.any.dim, (keep, -1, True))
        new.append(valid)
    with graph.inserting_after(node):
        out_zero = _scalar(graph, 0.0, dtype)
    with graph.inserting_after(out_zero):
        guarded = graph.call_function(aten.where.self, (valid, node, out_zero))
    node.replace_all_uses_with(guarded, delete_user_cb=lambda user: user is not guarded)
    for n in (*new, out_zero, guarded):
        copy_provenance(n, node)
    node.meta[GUARDED] = True


BOOL_MASK = RewriteRule(name="bool-mask", anchors=(aten.scaled_dot_product_attention,),
                        match=_masked_sdpa(is_bool=True), replacement=_guard)
FLOAT_MASK = RewriteRule(name="float-mask", anchors=(aten.scaled_dot_product_attention,),
                         match=_masked_sdpa(is_bool=False), replacement=_guard)


class AttentionMaskToAdditive(RewritePass):
    """Rewrite SDPA masks into additive float masks with PyTorch's fully-masked-row semantics."""

    name = "attention-mask-to-additive"
    Options = NoOptions

    def rules(self, options: NoOptions) -> list[RewriteRule]:
        return [BOOL_MASK, FLOAT_MASK]

    def stats(self, report: RewriteReport) -> dict[str, Any]:
        return {"rewritten": report.matched("bool-mask", "float-mask")}


def _set_mask(node: fx.Node, mask: fx.Node) -> None:
    if len(node.args) > 3:
        args = list(node.args)
        args[3] = mask
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, "attn_mask": mask}


def _scalar(graph: fx.Graph, value: float, dtype: torch.dtype) -> fx.Node:
    return graph.call_function(aten.scalar_tensor.default, (value,), {"dtype": dtype})
