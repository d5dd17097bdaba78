"""Integer kernels for quantized linear layers: ``dq(x_q) → linear ← dq(w_q)`` becomes an
``int8 × int8 → int32`` matmul with a float epilogue, instead of float compute.

Before (the quantized program, as the simulator runs it)::

    %xq = edgecc.quantize(%x, @sx, @zx, ..., 'int8');  %xd = edgecc.dequantize(%xq, ...)
    %wd = edgecc.dequantize(@w_q:int8[N,K], @sw[N], 0, 0, 0, 'int8', float32)
    %y  = aten.linear(%xd, %wd, @b)

After (Relax)::

    acc = matmul(xq:int8, permute(w_q):int8, out_dtype=int32)     # sdot on +dotprod
    acc = acc - zx · Σ_k w_q[n, k]                                 # when zx != 0
    y   = float32(acc) · (sx · sw[n]) + b

Exact integer accumulation; the epilogue differs from the simulator's float32 sum only by
rounding, so a following ``quantize`` agrees exactly or within one step. Supported: int8
activations (per-tensor, any zero point) and symmetric int8 weights (per-tensor or per
output channel). Anything else — uint8 / 4-bit / blocked weights — runs in float, with a
warning naming the layer. The reduction loop stays innermost in the schedule so LLVM's
vectorizer emits ``sdot`` on cores with ``+dotprod``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.fx as fx

from edgecc.quant import is_dequantize, is_quantize


def exported_constants(exported: Any) -> dict[str, np.ndarray]:
    """Placeholder name → value for the weights and constants lifted by ``torch.export``."""
    sig = exported.graph_signature
    out = {}
    for table, source in ((sig.inputs_to_parameters, exported.state_dict),
                          (sig.inputs_to_buffers, exported.state_dict),
                          (sig.inputs_to_lifted_tensor_constants, exported.constants)):
        for placeholder, key in table.items():
            if key in source:
                out[placeholder] = source[key].detach().cpu().numpy()
    return out


def _plan(node: fx.Node, importer: Any, constants: dict[str, np.ndarray]
          ) -> tuple[dict[str, Any] | None, str]:
    """The integer operands of a quantized linear, or None and why not."""
    x, w = node.args[0], node.args[1]
    if not (is_dequantize(x) and is_dequantize(w)):
        return None, ""
    if not is_quantize(x.args[0]):
        return None, "its input is not quantized in the graph"
    def const(n: Any) -> np.ndarray | None:
        return constants.get(n.name) if isinstance(n, fx.Node) else None

    sx, zx, sw, zw, wq = (const(a) for a in (x.args[1], x.args[2], w.args[1], w.args[2],
                                             w.args[0]))
    if any(v is None for v in (sx, zx, sw, zw, wq)):
        return None, "scales or weights are not constants"
    if x.args[5] != "int8" or sx.size != 1:
        return None, f"activations are {x.args[5]} {'per-tensor' if sx.size == 1 else 'per-axis'}"
    if w.args[5] != "int8" or w.args[4] or np.any(zw != 0) or (sw.size > 1 and w.args[3] != 0):
        return None, f"weights are {w.args[5]}, block {w.args[4]}, asymmetric or per-input"
    return {"xq": x.args[0], "wq": wq.astype(np.int8), "sx": float(sx.reshape(-1)[0]),
            "zx": int(zx.reshape(-1)[0]), "sw": sw.reshape(-1).astype(np.float32)}, ""


def integer_linear(fallback: Any, constants: dict[str, np.ndarray],
                   notes: list[str]) -> Any:
    """A converter for ``aten.linear`` / ``edgecc.linear_act`` running quantized layers as
    integer matmuls (``fallback`` converts everything else; layers that stay in float are
    appended to ``notes`` and warned about)."""

    def convert(node: fx.Node, importer: Any) -> Any:
        from tvm import relax

        plan, why = _plan(node, importer, constants)
        if plan is None:
            if why:
                notes.append(f"{node.name}: quantized linear runs in float ({why})")
            return fallback(node, importer)
        op, bb = relax.op, importer.block_builder
        xq = importer.env[plan["xq"]]
        wq = plan["wq"]
        acc = bb.emit(op.matmul(xq, relax.const(np.ascontiguousarray(wq.T)), out_dtype="int32"))
        if plan["zx"]:
            rowsum = wq.astype(np.int64).sum(axis=1).astype(np.int32) * plan["zx"]
            acc = bb.emit(op.subtract(acc, relax.const(rowsum)))
        scale = (np.float32(plan["sx"]) * plan["sw"]).astype(np.float32)
        y = bb.emit(op.multiply(op.astype(acc, "float32"), relax.const(scale)))
        bias = node.args[2] if len(node.args) > 2 else None
        if isinstance(bias, fx.Node):
            y = bb.emit(op.add(y, op.astype(importer.env[bias], "float32")))
        if len(node.args) > 3 and isinstance(node.args[3], str):  # linear_act
            from edgecc.targets.host.lowering import _activation

            y = _activation(bb, y, node.args[3])
        return y

    return convert


def float_convolution(base: Any, notes: list[str]) -> Any:
    """Convolutions have no integer kernel yet: a quantized one runs in float, noted."""

    def convert(node: fx.Node, importer: Any) -> Any:
        if is_dequantize(node.args[0]) and is_dequantize(node.args[1]):
            notes.append(f"{node.name}: quantized convolution runs in float (no integer "
                         "convolution kernel yet)")
        return base(node, importer)

    return convert
