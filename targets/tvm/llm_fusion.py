"""Horizontal fusion of the linear layers that read one input: an LLM's q/k/v projections
and its MLP's gate/up projections become one matmul each, over the weights concatenated
at compile time.

A decode step multiplies one token's hidden state by each weight matrix; every matmul is
a parallel kernel (a thread-pool launch, a wait for the slowest worker) streaming its
weight from memory. Three launches for q, k and v (576 x 576, 192 x 576, 192 x 576 in
SmolLM2-135M) and two for gate and up become one each, over one longer stream::

    before:  q = x @ Wq^T   k = x @ Wk^T   v = x @ Wv^T          (3 kernels)
    after:   qkv = x @ concat(Wq, Wk, Wv)^T                      (1 kernel)
             q = qkv[..., :576]  k = qkv[..., 576:768]  v = qkv[..., 768:]

Each output sums over the same products in the same order as before (the rows of the
concatenated weight are the original rows): results are bit-identical. The slices are
injective and fuse into their consumers (RoPE, the cache concatenation, SiLU * up).
Linears with a bias keep it as the add after their slice. Only float32 constant weights
(``permute_dims`` of a 2-D constant, as TVM's importer writes ``linear``) are fused.
"""

from __future__ import annotations

from typing import Any


def _const_weight(value: Any) -> Any:
    """The 2-D float32 constant ``W`` when ``value`` is ``permute_dims(W)`` (a linear's
    transposed weight), else None."""
    from tvm import relax
    from tvm.ir.expr import Constant

    if not isinstance(value, relax.Call) or getattr(value.op, "name", "") != \
            "relax.permute_dims":
        return None
    data = value.args[0]
    if not isinstance(data, Constant) or len(data.value.shape) != 2 \
            or str(data.value.dtype) != "float32":
        return None
    axes = value.attrs.axes
    if axes is not None and [int(a) for a in axes] != [1, 0]:
        return None
    return data


def fuse_shared_input_linears(module: Any, report: dict[str, int] | None = None) -> Any:
    """``module`` (Relax, weights bound) with the float32 linears that share an input
    fused (module docstring); ``report["fused_linears"]`` counts the linears merged."""
    import numpy as np
    import tvm
    from tvm import relax

    fused = 0
    updates = {}
    for gvar, func in module.functions.items():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        blocks = []
        changed = False
        for block in func.body.blocks:
            new_block, n = _fuse_block(block, relax, np, tvm)
            fused += n
            changed = changed or n > 0
            blocks.append(new_block)
        if changed:
            body = relax.SeqExpr(blocks, func.body.body)
            updates[gvar] = relax.Function(func.params, body, func.ret_ty,
                                           func.is_pure, func.attrs, func.span)
    for gvar, func in updates.items():
        module[gvar] = func
    if report is not None:
        report["fused_linears"] = report.get("fused_linears", 0) + fused
    if updates:
        module = relax.transform.DeadCodeElimination()(module)
    return module


def _fuse_block(block: Any, relax: Any, np: Any, tvm: Any) -> tuple[Any, int]:
    if not isinstance(block, relax.DataflowBlock):
        return block, 0
    weights = {}  # permute_dims var -> constant
    groups: dict[Any, list[int]] = {}  # input var -> indices of its matmul bindings
    bindings = list(block.bindings)
    for i, b in enumerate(bindings):
        if not isinstance(b, relax.VarBinding):
            continue
        w = _const_weight(b.value)
        if w is not None:
            weights[b.var] = w
            continue
        v = b.value
        if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.matmul" \
                and v.args[1] in weights and isinstance(v.args[0], relax.Var) \
                and str(getattr(v.ty, "dtype", "")) == "float32":
            groups.setdefault(v.args[0], []).append(i)
    insert: dict[int, list[Any]] = {}
    replace: dict[int, Any] = {}
    merged = 0
    bb = relax.BlockBuilder()
    for x, members in groups.items():
        if len(members) < 2:
            continue
        consts = [weights[bindings[i].value.args[1]] for i in members]
        k = consts[0].value.shape[1]
        if any(c.value.shape[1] != k for c in consts):
            continue
        arrays = [c.value.numpy() for c in consts]
        cat = relax.const(np.ascontiguousarray(np.concatenate(arrays, 0)), "float32")
        first = bindings[members[0]].value
        wt_value = bb.normalize(relax.op.permute_dims(cat))
        wt = relax.DataflowVar("fused_wt", wt_value.ty)
        y_value = bb.normalize(relax.op.matmul(x, wt, out_dtype="float32"))
        y = relax.DataflowVar("fused_linear", y_value.ty)
        insert[members[0]] = [relax.VarBinding(wt, wt_value), relax.VarBinding(y, y_value)]
        start = 0
        rank = len(first.ty.shape)
        for i, a in zip(members, arrays):
            stop = start + a.shape[0]
            replace[i] = bb.normalize(relax.op.strided_slice(
                y, axes=[rank - 1], begin=[start], end=[stop]))
            start = stop
        merged += len(members)
    if not merged:
        return block, 0
    out = []
    for i, b in enumerate(bindings):
        out.extend(insert.get(i, []))
        out.append(relax.VarBinding(b.var, replace[i]) if i in replace else b)
    return relax.DataflowBlock(out, block.span), merged
