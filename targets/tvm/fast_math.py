"""Vectorizable polynomial forms of exp, erf, tanh and softmax for CPU kernels.

TVM lowers ``erf`` / ``tanh`` / ``exp`` to calls of the C library (one scalar call per
element, which stops LLVM from vectorizing the loop around it). In BERT, GELU's erf alone
made the FFN's first matmul kernel 4x slower than the same matmul without it. TVM ships
polynomial versions (``topi.fast_erf``, ``fast_tanh``, ``fast_exp``, ``fast_softmax``);
this pass swaps them in for float32 ops before legalization (as TVM's FastMathTransform
does, which also rewrites other dtypes), and writes GELU — a composite op TVM legalizes
with erf inside — out as its formula::

    before:  y = R.nn.gelu(x)
    after:   s = x * 0.70710678;  e = fast_erf(s);  y = x * (0.5 + e * 0.5)

Error bound: the polynomials are Eigen's float32 approximations; TVM's tests hold them to
1e-5 absolute (erf, tanh) and 1e-5 relative (exp) of numpy's float64 functions, below the
host target's 1e-4 verification tolerance (and every compile verifies outputs).
"""

from __future__ import annotations

from typing import Any


def fast_math() -> Any:
    """A module pass: float32 gelu / erf / tanh / exp / softmax -> TVM's polynomial kernels
    (other dtypes are left alone)."""
    import tvm
    from tvm import relax, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator

    fast = {"relax.erf": topi.fast_erf, "relax.tanh": topi.fast_tanh,
            "relax.exp": topi.fast_exp}

    @mutator
    class FastMath(PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            name = getattr(call.op, "name", "")
            if not call.args or _dtype(call.args[0]) != "float32":
                return call
            x = call.args[0]
            if name in fast:
                return self.builder_.call_te(fast[name], x)
            if name == "relax.nn.softmax":
                return self.builder_.call_te(topi.nn.fast_softmax, x, call.attrs.axis)
            if name == "relax.nn.gelu":
                scaled = self.builder_.emit(relax.op.multiply(x, relax.const(0.5 ** 0.5)))
                erf = self.builder_.call_te(topi.fast_erf, scaled)
                half = relax.const(0.5, "float32")
                inner = self.builder_.emit(relax.op.add(half, relax.op.multiply(erf, half)))
                return relax.op.multiply(x, inner)
            return call

    @tvm.transform.module_pass(opt_level=0, name="EdgeccFastMath")
    def run(mod: Any, _ctx: Any) -> Any:
        rewriter = FastMath(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return run


def _dtype(expr: Any) -> str:
    info = getattr(expr, "ty", None) or getattr(expr, "struct_info", None)
    return str(getattr(info, "dtype", ""))
