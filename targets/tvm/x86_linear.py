"""The transformers' float linears on ``edgecc_x86_linear`` (``x86_linear_source``): the
``edgecc_x86_sgemm`` calls ``x86_fp32`` emitted, retargeted when they have enough rows, and the
GELU that reads one (``x86_attention``'s ``edgecc_x86_gelu`` call, float output only) applied
in its write-back.

Before (after ``x86_fp32`` and ``x86_attention``; MiniLM's intermediate linear)::

    y = call_dps_packed("edgecc_x86_sgemm", x, panels, b, [M, K, N], [lo, hi])
    y3 = reshape(y, [B, S, N])
    g = call_dps_packed("edgecc_x86_gelu", y3, [M·N, 0, 1, 0], [c1, c2, ...])

After::

    y = call_dps_packed("edgecc_x86_linear", x, panels, b, [M, K, N, 1], [lo, hi, c1, c2])
    g = reshape(y, [B, S, N])

Same arguments and the same sums as the SGEMM (bit-identical outputs: the source's
docstring); what changes is the order the kernel walks the product (12 packed rows against
every panel: 1.10x faster on MiniLM's shapes, one thread, measured standalone) and the GELU's
separate pass over the output (2.2 of 124 ms at 2 threads in MiniLM). Calls with fewer than
``LinearOptions.min_rows`` rows stay on the SGEMM, whose tasks also split the columns (the
linear's split only its rows). Only x86 targets with AVX2 reach here (``x86_attention.apply``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecc.targets.tvm.relax_analysis import (
    constant_value,
    dataflow_users,
    packed_callee,
    static_shape,
    with_rewritten_functions,
)
from edgecc.targets.tvm.x86_attention_source import LINEAR, SYMBOLS

SGEMM = "edgecc_x86_sgemm"
GELU = SYMBOLS[2]
GELU_MODES = {0: 1, 1: 2}  # edgecc_x86_gelu's mode (0 erf, 1 tanh) -> the linear's meta[3]


@dataclass(frozen=True)
class LinearOptions:
    """``min_rows``: SGEMM calls with at least this many rows move to the linear kernel (8
    tasks of 12 rows: enough for 2+ threads); ``fuse_gelu``: apply a GELU that reads the
    output in the write-back."""

    min_rows: int = 96
    fuse_gelu: bool = True
    merge_qkv: bool = True  # an attention's q / k / v SGEMMs as one (x86_linear_qkv)


@dataclass(frozen=True)
class RewriteStats:
    linears: int = 0
    gelu_fused: int = 0
    qkv_merged: int = 0  # attentions whose q / k / v projections became one call

    def as_dict(self) -> dict[str, int]:
        return {"x86_linear": self.linears, "gelu_fused": self.gelu_fused,
                "qkv_merged": self.qkv_merged}


class _Plan:
    """One SGEMM call to retarget, with the GELU (and the reshape between) it absorbs."""

    def __init__(self, var: Any, call: Any, meta: np.ndarray, bounds: np.ndarray) -> None:
        self.var, self.call, self.meta, self.bounds = var, call, meta, bounds
        self.gelu: Any = None  # the GELU binding's var
        self.mode = 0
        self.c = (0.0, 0.0)
        self.reshape: Any = None  # the reshape binding's var between them, if any
        self.gelu_shape: Any = None


def _plans(func: Any, options: LinearOptions) -> list[_Plan]:
    from tvm import relax

    bindings = {}
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b, relax.VarBinding):
                bindings[b.var] = b.value
    users = dataflow_users(func)
    plans = []
    for var, value in bindings.items():
        if packed_callee(value) != SGEMM or not isinstance(var, relax.DataflowVar):
            continue
        args = list(value.args[1])
        meta, bounds = constant_value(args[3]), constant_value(args[4])
        if meta is None or bounds is None or meta.shape != (3,) or int(meta[0]) < \
                options.min_rows:
            continue
        plan = _Plan(var, value, meta, bounds)
        plans.append(plan)
        if options.fuse_gelu:
            _find_gelu(plan, var, bindings, users)
    return plans


def _find_gelu(plan: _Plan, var: Any, bindings: dict, users: dict) -> None:
    """``plan.gelu`` when the SGEMM's output (directly or through one reshape) is read only
    by a float-only, unclamped GELU call."""
    from tvm import relax

    if np.isfinite(plan.bounds).any():
        return  # a clamp before the GELU: keep the two kernels
    use = users.get(var, [])
    reshape = None
    if len(use) == 1 and isinstance(bindings.get(use[0]), relax.Call) and \
            getattr(bindings[use[0]].op, "name", "") == "relax.reshape":
        reshape = use[0]
        if not isinstance(reshape, relax.DataflowVar):
            return
        use = users.get(reshape, [])
    if len(use) != 1 or packed_callee(bindings.get(use[0])) != GELU or \
            static_shape(use[0].ty) is None:
        return
    gelu = bindings[use[0]]
    gargs = list(gelu.args[1])
    meta, fp = constant_value(gargs[1]), constant_value(gargs[2])
    if meta is None or fp is None or int(meta[2]) != 1 or int(meta[3]) != 0 or \
            int(meta[1]) not in GELU_MODES:
        return
    plan.gelu, plan.reshape = use[0], reshape
    plan.mode, plan.c = GELU_MODES[int(meta[1])], (float(fp[0]), float(fp[1]))
    plan.gelu_shape = static_shape(use[0].ty)


def rewrite(module: Any, options: LinearOptions = LinearOptions(),
            library: bool = True) -> tuple[Any, RewriteStats]:
    """``module`` with its SGEMM calls of ``options.min_rows`` rows or more on the linear
    kernel (module docstring); ``library``: add the kernels (``x86_attention``'s library) to
    its external modules (False when it has them: linking them twice fails)."""
    from tvm import relax

    from edgecc.targets.tvm import x86_linear_qkv

    updates = {}
    linears = fused = merged = 0
    for gvar, func in module.functions.items():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        n = 0
        if options.merge_qkv:
            func, n = x86_linear_qkv.merge(func)
            merged += n
        plans = _plans(func, options)
        if not plans and not n:
            continue
        linears += len(plans)
        fused += sum(p.gelu is not None for p in plans)
        updates[gvar] = _mutate(func, plans) if plans else func
    stats = RewriteStats(linears, fused, merged)
    if not updates:
        return module, stats
    if not library:  # the caller's module already carries x86_attention's kernels
        module = module.clone()
        for gvar, func in updates.items():
            module[gvar] = func
        return relax.transform.DeadCodeElimination()(module), stats
    from edgecc.targets.tvm.x86_attention import external_module

    return with_rewritten_functions(module, updates, external_module()), stats


def _mutate(func: Any, plans: list[_Plan]) -> Any:
    from tvm import relax

    at = {p.var: p for p in plans}
    skip = {v for p in plans for v in (p.reshape, p.gelu) if v is not None}

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_var_binding_(self, binding: Any) -> None:
            var = binding.var
            if var in skip:
                return  # folded into the linear's call (its var remapped there)
            plan = at.get(var)
            if plan is None:
                super().visit_var_binding_(binding)
                return
            args = [self.visit_expr(a) for a in plan.call.args[1]]
            meta = np.array([*plan.meta, plan.mode], np.int64)
            fp = np.array([plan.bounds[0], plan.bounds[1], *plan.c], np.float32)
            args[3], args[4] = relax.const(meta, "int64"), relax.const(fp, "float32")
            # with a GELU, the output in the GELU's shape (the same elements in the same
            # order): a reshape here would become a copy kernel when TVM fuses it with the
            # next linear's flattening reshape
            ty = var.ty if plan.gelu is None else relax.TensorType(plan.gelu_shape, "float32")
            new = self.builder_.emit(relax.call_dps_packed(relax.ExternFunc(LINEAR), args, ty))
            self.set_var_remap(var if plan.gelu is None else plan.gelu, new)

    return Rewriter().visit_expr(func)


def apply(module: Any, library: bool = True,
          options: LinearOptions = LinearOptions()) -> tuple[Any, RewriteStats]:
    """``rewrite`` (the caller, ``x86_attention.apply``, has checked the target)."""
    return rewrite(module, options, library)
