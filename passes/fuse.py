"""fuse: merge conv/linear + bias + activation into one composite, and recognise attention.

Rules, applied in order:

1. linear canonicalisation -- ``addmm(b, x, permute(W, [1, 0]))``,
   ``add(mm|matmul(x, permute(W, [1, 0])), b)`` and ``matmul(x, C) [+ b]`` with a constant
   2-D ``C`` (how ONNX stores a linear layer) become ``aten.linear(x, W, b)``;
2. activation fusion -- a convolution or linear whose only user is an activation (relu,
   relu6 = ``hardtanh(0, 6)``/``clamp(0, 6)``, gelu, gelu-tanh, silu, hardswish, sigmoid)
   becomes ``edgecc.conv_act`` / ``edgecc.linear_act``;
3. attention -- ``matmul(softmax(matmul(q·s₁, kᵀ·s₂) · s₃ [+ mask]), v)``, the softmax
   optionally NaN-guarded (``where(isnan(p), 0, p)``, as exporters write PyTorch's safe
   softmax), becomes ``aten.scaled_dot_product_attention(q, k, v, mask, scale=s₁s₂s₃)``, so
   an attention block written out by hand or decomposed by an exporter is one recognisable
   op again. ``kᵀ`` may come from any chain of reshapes (a transpose is emitted then). One
   difference, for the better: a query row whose scores are all -inf gives zeros, as
   PyTorch's SDPA does, where a bare softmax gives NaN.

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


def _stored_transposed(program: Program, node: Any, user: fx.Node) -> fx.Node | None:
    """For ``matmul(x, C)`` with constant 2-D ``C`` ([in, out]): a new constant ``Cᵀ``."""
    if not program.is_constant(node):
        return None
    value = program.tensor(node)
    xv = val(user.args[0])
    if value.dim() != 2 or xv is None or xv.dim() < 2 or not value.is_floating_point():
        return None
    return program.add_constant(f"{node.target}_t", value.t().contiguous(), before=user)


def _feeds_bias_add(program: Program, node: fx.Node) -> bool:
    user = only_user(node)
    return bool(is_op(user, aten.add) and user.args[0] is node and
                program.is_constant(user.args[1]) and program.tensor(user.args[1]).dim() == 1)


def _scalar_constant(program: Program, node: Any) -> float | None:
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return float(node)
    if program.is_constant(node) and program.tensor(node).numel() == 1:
        return float(program.tensor(node).reshape(()))
    return None


def _strip_scale(program: Program, node: Any) -> tuple[Any, float]:
    """``(x, s)`` for ``x * s`` / ``x / s`` by a scalar constant, else ``(node, 1)``."""
    if is_op(node, aten.mul, aten.div) and only_user(node) is not None:
        factor = _scalar_constant(program, node.args[1])
        if factor is not None and factor != 0:
            return node.args[0], factor if is_op(node, aten.mul) else 1.0 / factor
    return node, 1.0


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
                    w = _transposed_constant(program, wt) or _stored_transposed(program, wt, mm)
            elif is_op(node, aten.matmul) and not _feeds_bias_add(program, node):
                x, wt = node.args[:2]
                w = _stored_transposed(program, wt, node)
                b = None
            if w is None or not (b is None or program.is_constant(b)):
                continue
            if b is not None:
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
            if is_op(probs, aten.where) and only_user(probs) is out:
                cond, zero, sm = probs.args
                if not (is_op(cond, aten.isnan) and cond.args[0] is sm and
                        _scalar_constant(program, zero) == 0.0 and len(sm.users) == 2):
                    continue
                probs = sm
            elif only_user(probs) is not out:
                continue
            if not is_op(probs, aten._softmax, aten.softmax):
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
            scores, scale = _strip_scale(program, scores)
            if not is_op(scores, aten.matmul, aten.bmm) or only_user(scores) is None:
                continue
            q, kt = scores.args[:2]
            q, s_q = _strip_scale(program, q)
            kt, s_k = _strip_scale(program, kt)
            scale *= s_q * s_k
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
            transpose_k = k is None
            k = kt if transpose_k else k
            if k is None or any(val(t) is None or val(t).dim() < 3 for t in (q, k, v)):
                continue
            if val(q).dtype != val(probs).dtype:
                continue
            mv = val(mask) if mask is not None else None
            if mv is not None and mv.dtype not in (val(q).dtype, torch.bool):
                continue
            if transpose_k:  # only now that the match is certain (never mutate before)
                with graph.inserting_before(out):
                    k = graph.call_function(aten.transpose.int, (kt, -2, -1))
                k.meta["val"] = val(kt).transpose(-2, -1)
                copy_provenance(k, out)
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
