"""int8 × int8 → int32 matrix products for the integer kernels, with the weight packed at
compile time for the instruction the core has.

    C[M, N] = A[M, K] · W[N, K]ᵀ          A: int8 activations (a Relax value), W: int8 constant

* ``i8mm`` cores (Armv8.6 ``+i8mm``: Cortex-A710/X2, Neoverse V1/N2, Graviton3):
  ``smmla`` multiplies a 2×8 by an 8×2 int8 block into a 2×2 int32 tile (32 MACs). W is
  packed as ``[N/2, K/8, 2, 8]``; A is packed the same way at run time (``[M/2, K/8, 2, 8]``),
  zero-padded — zeros add nothing to the sums.
* ``dotprod`` cores (``+dotprod``: Cortex-A55/A76/A78, Neoverse N1): ``sdot`` adds four
  4-byte dot products into four int32 lanes. W is packed as ``[N/4, K/4, 4, 4]`` (TVM's
  ``dot_4x4_i8i8s32_sdot`` layout): one 16-byte load serves four output columns, the four
  bytes of A are broadcast.
* anything else (x86 included): a row-by-row kernel with W kept ``[N, K]`` (contiguous
  along K for both operands: widening multiply-adds); Relax's ``matmul(...,
  out_dtype="int32")`` when a shape is symbolic.

The kernels are TVMScript PrimFuncs built for the static shapes of each layer and called
with ``call_tir``; they call the AArch64 intrinsics with ``call_llvm_pure_intrin``, so the
instruction is in the library whatever the vectorizer decides (``objdump`` finds it). They
are marked scheduled: the default CPU schedule leaves them alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ISAS = ("i8mm", "dotprod", "generic")


def isa_for(features: tuple[str, ...] | list[str]) -> str:
    """The best int8 product a core offers, from its LLVM feature names (without '+')."""
    feats = {f.lstrip("+") for f in features}
    if "i8mm" in feats:
        return "i8mm"
    if "dotprod" in feats:
        return "dotprod"
    return "generic"


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


def pack_weight(w: np.ndarray, isa: str) -> np.ndarray:
    """``W[N, K]`` int8 → the layout the ``isa`` kernel reads (zero-padded)."""
    n, k = w.shape
    if isa == "i8mm":
        rows, cols = 2, 8
    elif isa == "dotprod":
        rows, cols = 4, 4
    else:
        return np.ascontiguousarray(w)
    padded = np.zeros((_ceil(n, rows), _ceil(k, cols)), np.int8)
    padded[:n, :k] = w
    n2, k2 = padded.shape
    return np.ascontiguousarray(
        padded.reshape(n2 // rows, rows, k2 // cols, cols).transpose(0, 2, 1, 3))


def _smmla_kernel(m: int, n: int, k: int) -> Any:
    from tvm.script import tirx as T

    m2, n2, k8 = _ceil(m, 2) // 2, _ceil(n, 2) // 2, _ceil(k, 8) // 8

    @T.prim_func(s_tir=True)
    def smmla_gemm(a: T.Buffer((m, k), "int8"), w: T.Buffer((n2, k8, 2, 8), "int8"),
                   c: T.Buffer((m, n), "int32")):
        T.func_attr({"tirx.noalias": True, "tir.is_scheduled": True, "tirx.is_scheduled": True})
        ap = T.alloc_buffer((m2, k8, 2, 8), "int8")
        tile = T.alloc_buffer((m2, n2, 4), "int32")
        for i in T.parallel(m2):
            for kb, r, j in T.grid(k8, 2, 8):
                row = i * 2 + r
                col = kb * 8 + j
                ap[i, kb, r, j] = T.if_then_else(row < m and col < k, a[T.min(row, m - 1), T.min(col, k - 1)], T.int8(0))
        for i in T.parallel(m2):
            for jn in range(n2):
                acc = T.decl_buffer((4,), "int32", scope="local")
                acc[T.ramp(0, 1, 4)] = T.broadcast(T.int32(0), 4)
                for kb in range(k8):
                    acc[T.ramp(0, 1, 4)] = T.call_llvm_pure_intrin(
                        "int32x4", "llvm.aarch64.neon.smmla.v4i32.v16i8",
                        acc[T.ramp(0, 1, 4)], ap.vload([i, kb, 0, 0], "int8x16"),
                        w.vload([jn, kb, 0, 0], "int8x16"))
                tile[i, jn, T.ramp(0, 1, 4)] = acc[T.ramp(0, 1, 4)]
        for i in T.parallel(m):
            for j in range(n):
                c[i, j] = tile[i // 2, j // 2, (i % 2) * 2 + j % 2]

    return smmla_gemm


def _sdot_kernel(m: int, n: int, k: int) -> Any:
    from tvm.script import tirx as T

    n4, k4 = _ceil(n, 4) // 4, _ceil(k, 4) // 4
    kp = k4 * 4

    @T.prim_func(s_tir=True)
    def sdot_gemm(a: T.Buffer((m, k), "int8"), w: T.Buffer((n4, k4, 4, 4), "int8"),
                  c: T.Buffer((m, n), "int32")):
        T.func_attr({"tirx.noalias": True, "tir.is_scheduled": True, "tirx.is_scheduled": True})
        ap = T.alloc_buffer((m, kp), "int8")
        tile = T.alloc_buffer((m, n4, 4), "int32")
        for i in T.parallel(m):
            for j in range(kp):
                ap[i, j] = T.if_then_else(j < k, a[i, T.min(j, k - 1)], T.int8(0))
        for i in T.parallel(m):
            for jn in range(n4):
                acc = T.decl_buffer((4,), "int32", scope="local")
                acc[T.ramp(0, 1, 4)] = T.broadcast(T.int32(0), 4)
                for kb in range(k4):
                    acc[T.ramp(0, 1, 4)] = T.call_llvm_pure_intrin(
                        "int32x4", "llvm.aarch64.neon.sdot.v4i32.v16i8",
                        acc[T.ramp(0, 1, 4)],
                        T.reinterpret("int8x16", T.broadcast(
                            T.reinterpret("int32", ap.vload([i, kb * 4], "int8x4")), 4)),
                        w.vload([jn, kb, 0, 0], "int8x16"))
                tile[i, jn, T.ramp(0, 1, 4)] = acc[T.ramp(0, 1, 4)]
        for i in T.parallel(m):
            for j in range(n):
                c[i, j] = tile[i, j // 4, j % 4]

    return sdot_gemm


def _generic_kernel(m: int, n: int, k: int) -> Any:
    """Row-times-row dot products: both operands contiguous along K, so LLVM's vectorizer
    turns the reduction into widening multiply-adds (``pmaddwd`` on x86, ``smlal`` on Arm);
    four weight rows share each load of the activation row."""
    from tvm.script import tirx as T

    n4 = n // 4

    @T.prim_func(s_tir=True)
    def int8_gemm(a: T.Buffer((m, k), "int8"), w: T.Buffer((n, k), "int8"),
                  c: T.Buffer((m, n), "int32")):
        T.func_attr({"tirx.noalias": True, "tir.is_scheduled": True, "tirx.is_scheduled": True})
        for i in T.parallel(m):
            for jb in range(n4):
                acc = T.decl_buffer((4,), "int32", scope="local")
                for r in T.unroll(4):
                    acc[r] = 0
                for kk in range(k):
                    for r in T.unroll(4):
                        acc[r] = acc[r] + T.Cast("int32", a[i, kk]) * T.Cast(
                            "int32", w[jb * 4 + r, kk])
                for r in T.unroll(4):
                    c[i, jb * 4 + r] = acc[r]
            for j in range(n4 * 4, n):
                s = T.decl_buffer((1,), "int32", scope="local")
                s[0] = 0
                for kk in range(k):
                    s[0] = s[0] + T.Cast("int32", a[i, kk]) * T.Cast("int32", w[j, kk])
                c[i, j] = s[0]

    return int8_gemm


def emit_gemm(bb: Any, a: Any, w: np.ndarray, isa: str) -> Any:
    """``a[..., K] (int8 Relax value) · w[N, K]ᵀ`` as int32 ``[..., N]``."""
    from tvm import relax

    shape = [d for d in a.ty.shape]
    static = all(isinstance(getattr(d, "value", None), int) for d in shape)
    n, k = w.shape
    if not static:
        return bb.emit(relax.op.matmul(a, relax.const(np.ascontiguousarray(w.T)),
                                       out_dtype="int32"))
    lead = [int(d.value) for d in shape[:-1]]
    m = int(np.prod(lead)) if lead else 1
    flat = bb.emit(relax.op.reshape(a, [m, k]))
    kernel = {"i8mm": _smmla_kernel, "dotprod": _sdot_kernel,
              "generic": _generic_kernel}[isa](m, n, k)
    name = f"{isa}_gemm_{m}x{n}x{k}"
    gvar = bb.add_func(kernel.with_attr("global_symbol", name), name)
    out = bb.emit(relax.call_tir(gvar, [flat, relax.const(pack_weight(w, isa))],
                                 relax.TensorStructInfo((m, n), "int32")
                                 if hasattr(relax, "TensorStructInfo")
                                 else relax.TensorType((m, n), "int32")))
    return bb.emit(relax.op.reshape(out, [*lead, n]))
