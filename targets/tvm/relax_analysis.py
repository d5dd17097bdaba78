"""Facts about a Relax function that the hand-written-kernel rewrites (``x86_fp32``,
``x86_attention``) both read: a value's static shape, and who uses each dataflow variable.

    static_shape(var.struct_info)   # [1, 128, 256], or None when a dimension is symbolic
    dataflow_users(func)            # {var: [the bindings' vars that read it], ...}
    packed_callee(call)             # "edgecc_x86_sgemm" for R.call_dps_packed("edgecc_x86_sgemm", ...)
    constant_value(expr)            # the numpy array of a Relax constant, else None
"""

from __future__ import annotations

from typing import Any

import numpy as np


def static_shape(info: Any) -> list[int] | None:
    """The shape of a tensor struct info as ints; None when unknown or symbolic."""
    shape = getattr(info, "shape", None)
    try:
        dims = [getattr(d, "value", None) for d in shape]
    except TypeError:  # unknown shape
        return None
    return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None


def packed_callee(call: Any) -> str | None:
    """The extern function an ``R.call_dps_packed`` calls; None for any other expression."""
    from tvm import relax

    if not isinstance(call, relax.Call) or getattr(call.op, "name", "") != \
            "relax.call_dps_packed":
        return None
    fn = call.args[0]
    return str(fn.global_symbol) if isinstance(fn, relax.ExternFunc) else None


def constant_value(expr: Any) -> np.ndarray | None:
    """A Relax constant's value as numpy; None when ``expr`` is not a constant."""
    from tvm.ir.expr import GenericConst

    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def dataflow_users(func: Any) -> dict[Any, list[Any]]:
    """Each dataflow variable of ``func`` -> the variables whose bindings read it (TVM's
    use-def chains, block by block)."""
    from tvm import relax

    users: dict[Any, list[Any]] = {}
    for block in func.body.blocks:
        if isinstance(block, relax.DataflowBlock):
            for var, readers in relax.analysis.udchain(block).items():
                users[var] = list(readers)
    return users


def with_rewritten_functions(module: Any, updates: dict[Any, Any], library: Any) -> Any:
    """A copy of ``module`` (the caller's is left as it was) with the functions in
    ``updates`` replaced, what they no longer use removed, and the kernel ``library`` the
    rewritten calls need added to its ``external_mods``."""
    from tvm import relax

    module = module.clone()
    for gvar, func in updates.items():
        module[gvar] = func
    module = relax.transform.DeadCodeElimination()(module)
    external = list((module.attrs or {}).get("external_mods") or [])
    return module.with_attr("external_mods", [*external, library])
