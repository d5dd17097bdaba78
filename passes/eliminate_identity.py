"""eliminate-identity: remove operators that return their input unchanged.

Removed when the result has the input's shape and dtype (checked on node metadata):

* eval-mode dropout (``aten.clone``, ``aten.dropout(train=False)``), ``alias``, ``detach``;
* no-op ``view``/``reshape``/``expand``, identity ``permute``/``transpose``, same-dtype
  ``_to_copy``;
* ``x * 1``, ``x / 1``, ``x + 0``, ``x - 0`` (scalar or all-ones/zeros constant that does
  not broadcast the result).

``aten._assert_tensor_metadata`` guards (inserted by ``torch.export`` for casts) are removed
when node metadata proves them, i.e. the asserted dtype is the input's.

Chains are collapsed first: ``view(view(x, a), b)`` becomes ``view(x, b)`` and
``permute(permute(x, p), q)`` becomes one permute (removed if it is the identity).

Before::

    %v1 = aten.view(%x, [2, 12])
    %v2 = aten.view(%v1, [2, 3, 4])      # x is [2, 3, 4]
    %d  = aten.clone(%v2)                # eval dropout
    %y  = aten.add(%d, 0)

After::

    (every use of %y reads %x)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from edgecc.pass_base import NoOptions
from edgecc.program import Program
from edgecc.rewrite import (
    Match, RewritePass, RewriteReport, RewriteRule, aten, is_op, replace_node, same_shape, val,
)

_RESHAPES = (aten.view, aten.reshape, aten._unsafe_view)
_PASS_THROUGH = (aten.clone, aten.alias, aten.detach, aten.lift_fresh_copy)


def _same_dtype(a: Any, b: Any) -> bool:
    va, vb = val(a), val(b)
    return isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and va.dtype == vb.dtype


def _constant_equals(program: Program, node: Any, value: float) -> bool:
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return node == value
    if program.is_constant(node):
        t = program.tensor(node)
        return t.numel() <= 1 << 20 and bool((t == value).all())
    return False


def _permutation(node: fx.Node) -> list[int] | None:
    v = val(node.args[0])
    if not isinstance(v, torch.Tensor):
        return None
    rank = v.dim()
    if is_op(node, aten.permute):
        return [d % rank for d in node.args[1]] if rank else list(node.args[1])
    if is_op(node, aten.transpose):
        a, b = node.args[1] % max(rank, 1), node.args[2] % max(rank, 1)
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    return None


def _proven(node: fx.Node) -> bool:
    v = val(node.args[0])
    if not isinstance(v, torch.Tensor):
        return False
    dtype = node.kwargs.get("dtype", node.args[3] if len(node.args) > 3 else None)
    size = node.kwargs.get("size", node.args[1] if len(node.args) > 1 else None)
    if dtype is not None and dtype != v.dtype:
        return False
    return size is None or [str(d) for d in size] == [str(d) for d in v.shape]


def _match_reshape_chain(program: Program, node: fx.Node) -> dict[str, Any] | None:
    src = node.args[0] if node.args else None
    return {"args": (src.args[0], *node.args[1:])} if is_op(src, *_RESHAPES) else None


def _match_permute_chain(program: Program, node: fx.Node) -> dict[str, Any] | None:
    src = node.args[0] if node.args else None
    if not is_op(src, aten.permute, aten.transpose):
        return None
    p, q = _permutation(src), _permutation(node)
    if p is None or q is None:
        return None
    return {"target": aten.permute.default, "args": (src.args[0], [p[i] for i in q])}


def _rewire(m: Match) -> None:
    m.root.target = m.bindings.get("target", m.root.target)
    m.root.args = m.args


def _erase(m: Match) -> None:
    m.program.graph.erase_node(m.root)


def _match_identity(program: Program, node: fx.Node) -> dict[str, Any] | str | None:
    source = _identity_source(program, node)
    return {"source": source} if isinstance(source, fx.Node) else source


def _forward_to_source(m: Match) -> None:
    # The source existed before: it keeps its own provenance.
    replace_node(m.root, m.source, m.program.graph, provenance=False)


RESHAPE_CHAIN = RewriteRule(name="reshape-chain", anchors=_RESHAPES,
                            match=_match_reshape_chain, replacement=_rewire)
PERMUTE_CHAIN = RewriteRule(name="permute-chain", anchors=(aten.permute, aten.transpose),
                            match=_match_permute_chain, replacement=_rewire)
PROVEN_ASSERT = RewriteRule(
    name="proven-assert", anchors=(aten._assert_tensor_metadata,),
    match=lambda program, node: {} if _proven(node) else None, replacement=_erase)
IDENTITY = RewriteRule(name="identity", match=_match_identity, replacement=_forward_to_source)


class EliminateIdentity(RewritePass):
    """Remove identity operators and collapse reshape/permute chains (lossless)."""

    name = "eliminate-identity"
    Options = NoOptions

    def rules(self, options: NoOptions) -> list[RewriteRule]:
        # A chain collapses first, so the same node can then be seen to be the identity.
        return [RESHAPE_CHAIN, PERMUTE_CHAIN, PROVEN_ASSERT, IDENTITY]

    def stats(self, report: RewriteReport) -> dict[str, Any]:
        return {"removed": report.matched("proven-assert", "identity"),
                "collapsed_chains": report.matched("reshape-chain", "permute-chain")}


def _identity_source(program: Program, node: fx.Node) -> fx.Node | str | None:
    """The node ``node`` returns unchanged, why not (a clone that must stay), or None."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    x = node.args[0]
    keeps_type = same_shape(node, x) and _same_dtype(node, x)
    if is_op(node, *_PASS_THROUGH):
        fmt = node.kwargs.get("memory_format")
        if is_op(node, aten.clone) and fmt not in (None, torch.preserve_format):
            # A contiguous copy is what makes a following view legal (e.g. after expand).
            if fmt != torch.contiguous_format:
                return f"clone to {fmt} changes the layout"
            if any(is_op(u, aten.view, aten._unsafe_view) for u in node.users):
                return "contiguous copy feeds a view"
        return x if keeps_type else None
    if is_op(node, aten.dropout):
        train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", True)
        return x if not train and keeps_type else None
    if is_op(node, *_RESHAPES, aten.expand):
        return x if keeps_type else None
    if is_op(node, aten.permute, aten.transpose):
        perm = _permutation(node)
        return x if perm is not None and perm == sorted(perm) and keeps_type else None
    if is_op(node, aten._to_copy):
        extra = {k for k, v in node.kwargs.items() if v is not None and k != "dtype"}
        return x if keeps_type and not (extra - {"layout", "device"}) else None
    if not keeps_type:
        return None
    other = node.args[1] if len(node.args) > 1 else None
    alpha = node.kwargs.get("alpha", 1)
    if is_op(node, aten.mul) and alpha == 1:
        if _constant_equals(program, other, 1.0):
            return x
        if isinstance(other, fx.Node) and _constant_equals(program, x, 1.0) and \
                same_shape(node, other) and _same_dtype(node, other):
            return other
    if is_op(node, aten.div) and _constant_equals(program, other, 1.0):
        return None if node.kwargs.get("rounding_mode") else x
    if is_op(node, aten.add, aten.sub) and _constant_equals(program, other, 0.0):
        return x
    if is_op(node, aten.add) and isinstance(other, fx.Node) and \
            _constant_equals(program, x, 0.0) and same_shape(node, other) and \
            _same_dtype(node, other):
        return other
    return None
