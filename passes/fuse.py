"""fuse: merge conv/linear + bias + activation into one composite, and recognise attention.

Rules, applied in order:

1. linear canonicalisation -- ``addmm(b, x, permute(W, [1, 0]))`` and
   ``add(mm|matmul(x, permute(W, [1, 0])), b)`` with constant ``W``/``b`` become
   ``aten.linear(x, W, b)``;
2. activation fusion -- a convolution or linear whose only user is an activation (relu,
   relu6 = ``hardtanh(0, 6)``/``clamp(0, 6)``, gelu, gelu-tanh, silu, hardswish, sigmoid)
   becomes ``edgecc.conv_act`` / ``edgecc.linear_act``;
3. attention -- ``matmul(softmax(matmul(q, kᵀ) · scale [+ mask]), v)`` becomes
   ``aten.scaled_dot_product_attention(q, k, v, mask, scale=...)``, so an attention block
   written out by hand (or decomposed by an exporter) is one recognisable op again.

Before::

    %c = aten.convolution(%x, @w, @b, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    %r = aten.hardtanh(%c, 0.0, 6.0)

After::

    %r = edgecc.conv_act(%x, @w, @b, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, 'relu6')

Lossless: each composite computes exactly the operators it replaces.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.fx as fx

from edgecc.ops import ACTIVATIONS
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.program import Program
from edgecc.rewrite import aten, copy_provenance, is_op, only_user, val

edgecc_ops = torch.ops.edgecc


@dataclasses.dataclass(frozen=True)
class FuseOptions:
    activations: tuple[str, ...] = ACTIVATIONS  # which activations to fuse
    attention: bool = True  # recognise hand-written attention as SDPA

    def __post_init__(self) -> None:
        unknown = set(self.activations) - set(ACTIVATIONS)
        if unknown:
            raise ValueError(
                f"unknown activation(s) {sorted(unknown)}; choose from {', '.join(ACTIVATIONS)}"
            )


def activation_of(node: Any) -> str | None:
    """The fused-activation name a node computes, or None."""
    if is_op(node, aten.relu):
        return "relu"
    if is_op(node, aten.hardtanh) and tuple(node.args[1:3]) == (0.0, 6.0):
        return "relu6"
    if is_op(node, aten.clamp) and tuple(node.args[1:3]) == (0, 6):
        return "relu6"
    if is_op(node, aten.gelu):
        approx = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
        return "gelu" if approx == "none" else "gelu_tanh" if approx == "tanh" else None
    if is_op(node, aten.silu):
        return "silu"
    if is_op(node, aten.hardswish):
        return "hardswish"
    if is_op(node, aten.sigmoid):
        return "sigmoid"
    return None


def _transposed_constant(program: Program, node: Any) -> fx.Node | None:
    """``W`` if ``node`` is ``permute(W, [1, 0])`` / ``t(W)`` of a 2-D constant."""
    if is_op(node, aten.permute) and list(node.args[1]) in ([1, 0], [-1, -2]):
        src = node.args[0]
    elif is_op(node, aten.t) or (is_op(node, aten.transpose) and
                                  sorted(a % 2 for a in node.args[1:3]) == [0, 1]):
        src = node.args[0]
    else:
        return None
    if program.is_constant(src) and program.tensor(src).dim() == 2:
        return src
    return None


class Fuse(Pass):
    """Fuse conv/linear + bias + activation into composites; recognise attention (lossless)."""

    name = "fuse"
    Options = FuseOptions

    def run(self, program: Program, options: FuseOptions, context: PassContext) -> PassResult:
        stats = {"linear_canonicalized": self._canonicalize_linear(program),
                 "conv_act": 0, "linear_act": 0, "attention": 0}
        graph = program.graph
        for node in list(graph.nodes):
            act = activation_of(node)
            if act is None or act not in options.activations:
                continue
            producer = node.args[0]
            if only_user(producer) is not node:
                continue
            if is_op(producer, aten.convolution):
                args = list(producer.args) + [None] * (9 - len(producer.args))
                target, kind = edgecc_ops.conv_act.default, "conv_act"
                new_args = (*args[:9], act)
            elif is_op(producer, aten.linear):
                bias = producer.args[2] if len(producer.args) > 2 else None
                target, kind = edgecc_ops.linear_act.default, "linear_act"
                new_args = (producer.args[0], producer.args[1], bias, act)
            else:
                continue
            with graph.inserting_before(node):
                fused = graph.call_function(target, new_args)
            copy_provenance(fused, producer)
            node.replace_all_uses_with(fused)
            graph.erase_node(node)
            graph.erase_node(producer)
            stats[kind] += 1
        if options.attention:
            stats["attention"] = self._fuse_attention(program)
        modified = any(stats.values())
        return PassResult(program, modified=modified, stats=stats)

    # -- rule 1 ---------------------------------------------------------------------------
    @staticmethod
    def _canonicalize_linear(program: Program) -> int:
        graph = program.graph
        count = 0
        for node in list(graph.nodes):
            x = w = b = None
            if is_op(node, aten.addmm) and node.kwargs.get("beta", 1) == 1 and \
                    node.kwargs.get("alpha", 1) == 1:
                b, x, wt = node.args[:3]
                w = _transposed_constant(program, wt)
            elif is_op(node, aten.add) and node.kwargs.get("alpha", 1) == 1:
                mm, b = node.args[:2]
                if is_op(mm, aten.mm, aten.matmul) and only_user(mm) is node:
                    x, wt = mm.args[:2]
                    w = _transposed_constant(program, wt)
            if w is None or not program.is_constant(b):
                continue
            bias = program.tensor(b)
            if bias.dim() != 1 or bias.shape[0] != program.tensor(w).shape[0]:
                continue
            if val(x) is None or val(x).dim() < 1:
                continue
            with graph.inserting_before(node):
                lin = graph.call_function(aten.linear.default, (x, w, b))
            copy_provenance(lin, node)
            node.replace_all_uses_with(lin)
            graph.erase_node(node)
            count += 1
        if count:
            graph.eliminate_dead_code()
        return count

    # -- rule 3 ---------------------------------------------------------------------------
    @staticmethod
    def _fuse_attention(program: Program) -> int:
        graph = program.graph
        count = 0
        for out in list(graph.nodes):
            if not is_op(out, aten.matmul, aten.bmm):
                continue
            probs, v = out.args[:2]
            if not is_op(probs, aten._softmax, aten.softmax) or only_user(probs) is not out:
                continue
            dim = probs.args[1]
            vp = val(probs)
            if vp is None or dim % vp.dim() != vp.dim() - 1:
                continue
            scores = probs.args[0]
            mask = None
            if is_op(scores, aten.add) and only_user(scores) is probs:
                scores, mask = scores.args[0], scores.args[1]
                if not isinstance(mask, fx.Node):
                    continue
            scale = 1.0
            if is_op(scores, aten.mul, aten.div) and only_user(scores) is not None and \
                    isinstance(scores.args[1], (int, float)):
                factor = float(scores.args[1])
                scale = factor if is_op(scores, aten.mul) else 1.0 / factor
                scores = scores.args[0]
            if not is_op(scores, aten.matmul, aten.bmm) or only_user(scores) is None:
                continue
            q, kt = scores.args[:2]
            k = None
            if is_op(kt, aten.transpose) and val(kt) is not None:
                rank = val(kt).dim()
                if sorted(a % rank for a in kt.args[1:3]) == [rank - 2, rank - 1]:
                    k = kt.args[0]
            elif is_op(kt, aten.permute):
                perm = list(kt.args[1])
                rank = len(perm)
                swapped = list(range(rank))
                swapped[-1], swapped[-2] = swapped[-2], swapped[-1]
                if [p % rank for p in perm] == swapped:
                    k = kt.args[0]
            if k is None or any(val(t) is None or val(t).dim() < 3 for t in (q, k, v)):
                continue
            if val(q).dtype != val(probs).dtype:
                continue
            mv = val(mask) if mask is not None else None
            if mv is not None and mv.dtype not in (val(q).dtype, torch.bool):
                continue
            head_dim = val(q).shape[-1]
            kwargs: dict[str, Any] = {}
            if not (isinstance(head_dim, int) and math.isclose(scale, 1 / math.sqrt(head_dim),
                                                               rel_tol=1e-6)):
                kwargs["scale"] = scale
            with graph.inserting_before(out):
                sdpa = graph.call_function(
                    aten.scaled_dot_product_attention.default, (q, k, v, mask, 0.0, False),
                    kwargs,
                )
            copy_provenance(sdpa, out)
            out.replace_all_uses_with(sdpa)
            graph.erase_node(out)
            count += 1
        if count:
            graph.eliminate_dead_code()
        return count
