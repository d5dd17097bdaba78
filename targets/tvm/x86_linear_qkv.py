"""One linear call for an attention's q, k and v projections: BERT's / MiniLM's three SGEMM
calls that read the same input and feed only ``x86_attention``'s kernel become one SGEMM of
the concatenated panels (GPT-2's ``c_attn`` is one already), and the attention reads q, k
and v in place at their column offsets (its meta's strides and offsets, as for GPT-2's split).

Before (after ``x86_fp32`` and ``x86_attention``; MiniLM, per layer)::

    xq = reshape(x, [M, K]); q = call_dps_packed("edgecc_x86_sgemm", xq, Pq, bq, [M, K, N], b)
    ... the same for k and v ...
    y = call_dps_packed("edgecc_x86_attention", q, k, v, mask, keep, meta, fp)

After::

    qkv = call_dps_packed("edgecc_x86_sgemm", xq, [Pq; Pk; Pv], [bq; bk; bv], [M, K, 3N], b)
    y = call_dps_packed("edgecc_x86_attention", qkv, qkv, qkv, mask, keep, meta', fp)

(``x86_linear`` then moves the merged SGEMM to ``edgecc_x86_linear``.) Each output column is
the same sum as before (a column's tile reads only its own panel and the same packed rows, in
the same k order), so the outputs are bit-identical. What it saves: the rows of ``x`` packed
once instead of three times, two pool jobs per layer (their start-up and their tails), and the
three calls' VM overhead. Measured (2026-12-01, load 3-4, interleaved, paired medians): the
linear alone, one call / three on the same input, MiniLM's 1024 x 384 x 3·384 0.95x (1
thread, CPU time) and 0.97x (2 threads), BERT-4x256's 128 x 256 x 3·256 0.94x (2 threads);
whole models (bench/transformer_qkv.py, merged / three, paired medians of runs at load 2-4),
1 thread, CPU time: MiniLM 0.968x, 0.999x, 1.000x (40 rounds), BERT 0.997x, 0.987x, GPT-2
(nothing merged) 1.001x; 2 threads, wall clock: MiniLM 0.968x (p10-p90 0.63-1.48), BERT
0.993x (200 rounds, p10-p90 0.73-1.70; an A/A run of two default builds 1.018x): no loss
measured, the gain within the noise of this loaded 2-vCPU machine.

Conditions: the three SGEMMs have no residual, equal bounds, the same ``M`` and ``K``, each
``N`` a multiple of 16 (whole panels), inputs that are reshapes of one tensor (or it), and no
reader but the attention; the attention reads each at offset 0, rows ``N`` apart, batches a
multiple of ``N`` apart (the layout ``x86_attention`` gives a projection's output), and has
one (float) output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecc.targets.tvm.relax_analysis import constant_value, dataflow_users, packed_callee
from edgecc.targets.tvm.x86_attention_source import SYMBOLS

SGEMM = "edgecc_x86_sgemm"
ATTENTION = SYMBOLS[0]


@dataclass
class _Merge:
    attention: Any  # the attention binding's var
    sgemms: list[Any]  # q's, k's, v's SGEMM vars (in that order)
    last: Any  # the one bound last: the merged call goes there
    x: Any  # q's SGEMM input
    panels: np.ndarray
    bias: np.ndarray
    meta: np.ndarray  # [M, K, 3N]
    bounds: np.ndarray
    attention_meta: np.ndarray


def _root(expr: Any, bindings: dict) -> Any:
    """The tensor ``expr`` reshapes, through a chain of reshapes."""
    from tvm import relax

    while isinstance(expr, relax.Var):
        value = bindings.get(expr)
        if not isinstance(value, relax.Call) or getattr(value.op, "name", "") != \
                "relax.reshape":
            break
        expr = value.args[0]
    return expr


def _plan(var: Any, call: Any, bindings: dict, users: dict, order: dict) -> _Merge | None:
    from tvm import relax

    args = list(call.args[1])
    meta = constant_value(args[5]) if len(args) == 7 else None
    if meta is None or meta.shape[0] < 31 or not isinstance(var.ty, relax.TensorType) or \
            int(meta[26]) != 1 or int(meta[27]) != 0 or any(int(v) for v in meta[28:31]):
        return None
    srcs = args[:3]
    if any(not isinstance(s, relax.DataflowVar) for s in srcs) or srcs[0].same_as(srcs[1]) or srcs[1].same_as(srcs[2]) or srcs[0].same_as(srcs[2]):
        return None
    gemms = []
    for s in srcs:
        value = bindings.get(s)
        if packed_callee(value) != SGEMM or [u for u in users.get(s, [])] != [var]:
            return None
        gargs = list(value.args[1])
        if len(gargs) != 5:
            return None  # a residual
        consts = [constant_value(a) for a in gargs[1:]]
        if any(c is None for c in consts) or consts[2].shape != (3,):
            return None
        gemms.append((gargs[0], *consts))
    (x, _, _, m0, b0) = gemms[0]
    root = _root(x, bindings)
    for (xi, panels, _, mi, bi) in gemms:
        n = int(mi[2])
        if not _root(xi, bindings).same_as(root) or [int(v) for v in mi[:2]] != \
                [int(v) for v in m0[:2]] or not np.array_equal(bi, b0) or n % 16 or \
                panels.size != n * int(mi[1]):
            return None
    widths = [int(g[3][2]) for g in gemms]
    total = sum(widths)
    ameta = meta.copy()
    start = 0
    for t, n in enumerate(widths):  # (batch, head, row) strides of q, k, v: meta[8 + 3t ...]
        bs, hs, rs = (int(v) for v in meta[8 + 3 * t: 11 + 3 * t])
        if rs != n or bs % n or hs < 0 or hs >= n:
            return None
        ameta[8 + 3 * t: 11 + 3 * t] = [bs // n * total, hs, total]
        ameta[28 + t] = start
        start += n
    last = max(srcs, key=lambda s: order[s])
    return _Merge(var, list(srcs), last, x,
                  np.concatenate([g[1].reshape(-1) for g in gemms]).astype(np.float32),
                  np.concatenate([g[2].reshape(-1) for g in gemms]).astype(np.float32),
                  np.array([int(m0[0]), int(m0[1]), total], np.int64), b0.copy(), ameta)


def merge(func: Any) -> tuple[Any, int]:
    """``func`` with each attention's q / k / v SGEMMs merged into one (module docstring), and
    how many attentions it merged for."""
    from tvm import relax

    if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
        return func, 0
    bindings, order = {}, {}
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b, relax.VarBinding):
                bindings[b.var] = b.value
                order[b.var] = len(order)
    users = dataflow_users(func)
    merges = []
    for var, value in bindings.items():
        if packed_callee(value) == ATTENTION and isinstance(var, relax.DataflowVar):
            plan = _plan(var, value, bindings, users, order)
            if plan is not None:
                merges.append(plan)
    if not merges:
        return func, 0
    at_last = {m.last: m for m in merges}
    at_attention = {m.attention: m for m in merges}
    skip = {s for m in merges for s in m.sgemms if s is not m.last}
    merged_var: dict[Any, Any] = {}

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_var_binding_(self, binding: Any) -> None:
            var = binding.var
            if var in skip:
                return
            m = at_last.get(var)
            if m is not None:
                args = [self.visit_expr(m.x)] + [relax.const(c, str(c.dtype)) for c in
                                                 (m.panels, m.bias, m.meta, m.bounds)]
                ty = relax.TensorType([int(m.meta[0]), int(m.meta[2])], "float32")
                merged_var[m.attention] = self.builder_.emit(
                    relax.call_dps_packed(relax.ExternFunc(SGEMM), args, ty))
                return
            m = at_attention.get(var)
            if m is None:
                super().visit_var_binding_(binding)
                return
            args = [self.visit_expr(a) for a in binding.value.args[1]]
            qkv = merged_var[var]
            args[0] = args[1] = args[2] = qkv
            args[5] = relax.const(m.attention_meta, "int64")
            new = self.builder_.emit(
                relax.call_dps_packed(relax.ExternFunc(ATTENTION), args, var.ty))
            self.set_var_remap(var, new)

    return Rewriter().visit_expr(func), len(merges)
