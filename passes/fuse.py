"""fuse: merge conv/linear + bias + activation into one composite, and recognise attention.

Rewrite rules (named as in the stats and ``edgecc passes --explain fuse``), tried in this
order on every node in one walk of the graph, so a layer is canonicalised before its
activation is reached:

1. ``linear`` -- ``addmm(b, x, permute(W, [1, 0]))``,
   ``add(mm|matmul(x, permute(W, [1, 0])), b)`` and ``matmul(x, C) [+ b]`` with a constant
   2-D ``C`` (how ONNX stores a linear layer) become ``aten.linear(x, W, b)``;
2. ``conv-act`` / ``linear-act`` -- a convolution or linear whose only user is an
   activation (relu, relu6 = ``hardtanh(0, 6)``/``clamp(0, 6)``, gelu, gelu-tanh, silu,
   hardswish, sigmoid) becomes ``edgecc.conv_act`` / ``edgecc.linear_act``;
3. ``attention`` -- ``matmul(softmax(matmul(q·s₁, kᵀ·s₂) · s₃ [+ mask]), v)``, the softmax
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
from edgecc.program import Program
from edgecc.rewrite import (
    Match, RewritePass, RewriteReport, RewriteRule, aten, copy_provenance, ensure_no_match,
    is_op, only_user, user_count, val,
)

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


def _transposable(program: Program, node: Any, user: fx.Node) -> bool:
    """For ``matmul(x, C)``: is ``C`` a constant 2-D float [in, out] whose transpose is a
    linear layer's weight?"""
    if not program.is_constant(node):
        return False
    value = program.tensor(node)
    xv = val(user.args[0])
    return value.dim() == 2 and xv is not None and xv.dim() >= 2 and value.is_floating_point()


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


# -- rule 1: linear canonicalisation ------------------------------------------------------

def _match_linear(program: Program, node: fx.Node) -> dict[str, Any] | str | None:
    w = stored = None  # W itself, or a constant C = Wᵀ to transpose once matched
    if is_op(node, aten.addmm):
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            return None
        b, x, wt = node.args[:3]
        w = _transposed_constant(program, wt)
    elif is_op(node, aten.add):
        mm, b = node.args[:2]
        if node.kwargs.get("alpha", 1) != 1 or not (
                is_op(mm, aten.mm, aten.matmul) and only_user(mm) is node):
            return None
        x, wt = mm.args[:2]
        w = _transposed_constant(program, wt)
        if w is None and _transposable(program, wt, mm):
            stored = (wt, mm)
    else:  # matmul(x, C)
        if _feeds_bias_add(program, node):
            return None  # the add is the root
        x, wt = node.args[:2]
        b = None
        if _transposable(program, wt, node):
            stored = (wt, node)
    if w is None and stored is None:
        return None  # not a layer: the right operand is not a constant weight
    if not (b is None or program.is_constant(b)):
        return "bias is not a constant"
    out_features = program.tensor(w if w is not None else stored[0]).shape[-1 if stored else 0]
    if b is not None and (program.tensor(b).dim() != 1 or
                          program.tensor(b).shape[0] != out_features):
        return "bias is not 1-D of the layer's output features"
    if val(x) is None or val(x).dim() < 1:
        return "input has no known rank"
    return {"x": x, "w": w, "stored": stored, "b": b}


def _to_linear(m: Match) -> fx.Node:
    program, node, w = m.program, m.root, m.w
    if w is None:
        c, user = m.stored
        w = program.add_constant(f"{c.target}_t", program.tensor(c).t().contiguous(),
                                 before=user)
    with program.graph.inserting_before(node):
        return program.graph.call_function(aten.linear.default, (m.x, w, m.b))


LINEAR = RewriteRule(name="linear", anchors=(aten.addmm, aten.add, aten.matmul),
                     match=_match_linear, replacement=_to_linear)


# -- rule 2: activation fusion ------------------------------------------------------------

_ACTIVATION_OPS = (aten.relu, aten.hardtanh, aten.clamp, aten.gelu, aten.silu, aten.hardswish,
                   aten.sigmoid)


def _activation_rule(layer: Any, name: str, activations: tuple[str, ...]) -> RewriteRule:
    """``act(layer(...))`` -> ``edgecc.<layer>_act(..., act)`` for the selected activations."""

    def match(program: Program, node: fx.Node) -> dict[str, Any] | None:
        act = activation_of(node)
        producer = node.args[0]
        return {"act": act, "producer": producer} if act and is_op(producer, layer) else None

    def check(m: Match) -> str | None:
        if m.act not in activations:
            return f"{m.act} is not among the activations to fuse"
        if only_user(m.producer) is not m.root:
            return f"{m.producer.name} has other users"
        return None

    def replacement(m: Match) -> fx.Node:
        producer, graph = m.producer, m.program.graph
        if is_op(producer, aten.convolution):
            args = list(producer.args) + [None] * (9 - len(producer.args))
            target, new_args = edgecc_ops.conv_act.default, (*args[:9], m.act)
        else:
            bias = producer.args[2] if len(producer.args) > 2 else None
            target = edgecc_ops.linear_act.default
            new_args = (producer.args[0], producer.args[1], bias, m.act)
        with graph.inserting_before(m.root):
            fused = graph.call_function(target, new_args)
        copy_provenance(fused, producer)
        return fused  # the driver erases the activation, then the layer it no longer reads

    return RewriteRule(name=name, anchors=_ACTIVATION_OPS, match=match, check=check,
                       replacement=replacement)


# -- rule 3: attention --------------------------------------------------------------------

def _match_attention(program: Program, out: fx.Node) -> dict[str, Any] | str | None:
    probs, v = out.args[:2]
    if is_op(probs, aten.where):
        cond, zero, sm = probs.args
        if not (is_op(sm, aten._softmax, aten.softmax) and is_op(cond, aten.isnan) and
                cond.args[0] is sm and _scalar_constant(program, zero) == 0.0):
            return None
        if only_user(probs) is not out or user_count(sm) != 2:
            return "the NaN-guarded softmax has other users"
        probs = sm
    elif not is_op(probs, aten._softmax, aten.softmax):
        return None
    elif only_user(probs) is not out:
        return f"{probs.name} has other users"
    dim = probs.args[1]
    vp = val(probs)
    if vp is None or dim % vp.dim() != vp.dim() - 1:
        return "softmax is not over the last axis"
    scores = probs.args[0]
    mask = None
    if is_op(scores, aten.add) and only_user(scores) is probs:
        scores, mask = scores.args[0], scores.args[1]
        if not isinstance(mask, fx.Node):
            return "the added mask is not a tensor"
    scores, scale = _strip_scale(program, scores)
    if not is_op(scores, aten.matmul, aten.bmm) or only_user(scores) is None:
        return "scores are not a (scaled) matmul used once"
    q, kt = scores.args[:2]
    q, s_q = _strip_scale(program, q)
    kt, s_k = _strip_scale(program, kt)
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
    if any(val(t) is None or val(t).dim() < 3 for t in (q, k if k is not None else kt, v)):
        return "q, k and v are not all of rank >= 3"
    if val(q).dtype != val(probs).dtype:
        return "softmax dtype differs from q's"
    mv = val(mask) if mask is not None else None
    if mv is not None and mv.dtype not in (val(q).dtype, torch.bool):
        return "mask dtype is neither bool nor q's"
    return {"q": q, "k": k, "kt": kt, "v": v, "mask": mask, "scale": scale * s_q * s_k}


def _to_sdpa(m: Match) -> fx.Node:
    graph, out, k = m.program.graph, m.root, m.k
    if k is None:  # kᵀ came from reshapes: transpose it back
        with graph.inserting_before(out):
            k = graph.call_function(aten.transpose.int, (m.kt, -2, -1))
        k.meta["val"] = val(m.kt).transpose(-2, -1)
        copy_provenance(k, out)
    head_dim = val(m.q).shape[-1]
    kwargs: dict[str, Any] = {}
    if not (isinstance(head_dim, int) and math.isclose(m.scale, 1 / math.sqrt(head_dim),
                                                       rel_tol=1e-6)):
        kwargs["scale"] = m.scale
    with graph.inserting_before(out):
        return graph.call_function(aten.scaled_dot_product_attention.default,
                                   (m.q, k, m.v, m.mask, 0.0, False), kwargs)


ATTENTION = RewriteRule(name="attention", anchors=(aten.matmul, aten.bmm),
                        match=_match_attention, replacement=_to_sdpa)


class Fuse(RewritePass):
    """Fuse conv/linear + bias + activation into composites; recognise attention (lossless)."""

    name = "fuse"
    Options = FuseOptions

    def rules(self, options: FuseOptions) -> list[RewriteRule]:
        # One walk in graph order: a layer is canonicalised before its activation is seen.
        return [LINEAR, *self._activation_rules(options),
                *([ATTENTION] if options.attention else [])]

    @staticmethod
    def _activation_rules(options: FuseOptions) -> list[RewriteRule]:
        return [_activation_rule(aten.convolution, "conv-act", options.activations),
                _activation_rule(aten.linear, "linear-act", options.activations)]

    def stats(self, report: RewriteReport) -> dict[str, Any]:
        return {"linear_canonicalized": report.matched("linear"),
                "conv_act": report.matched("conv-act"), "linear_act": report.matched("linear-act"),
                "attention": report.matched("attention") if "attention" in report.rules else 0}

    def ensures(self, program: Program, options: FuseOptions) -> None:
        """No convolution / linear whose only user is a selected activation remains."""
        ensure_no_match(self.name, program, self._activation_rules(options))
