"""Quantized programs as ONNX QDQ: ``QuantizeLinear`` / ``DequantizeLinear`` nodes.

* Activation ``edgecc.quantize → edgecc.dequantize`` pairs (and ``fake_quantize``) are
  translated during export into ``QuantizeLinear → DequantizeLinear`` (the semantics are the
  same by construction, see ``edgecc.quant``); a range narrower than the format becomes a
  ``Clip`` before the quantize, which is exact.
* Stored weights (``edgecc.dequantize`` of a constant) are swapped for a float placeholder
  before export and, after it, for an integer initializer read by ``DequantizeLinear`` —
  ``INT8``/``UINT8``, or ``INT4``/``UINT4`` whose packing (two per byte, low nibble first)
  is edgecc's, so the bytes are copied as they are. 4-bit or blocked weights need opset 21.
* 16-bit float weights become a ``FLOAT16`` initializer and a ``Cast``.
* Palettized weights have no ONNX equivalent: they are expanded to float (stated in the
  manifest's not-verified list by the target).
"""

from __future__ import annotations

from typing import Any

import torch

from edgecc import stored_weights
from edgecc.program import Program
from edgecc.quant import (
    DEQUANTIZE, FAKE_QUANTIZE, QUANTIZE, is_dequantize, is_palette_dequantize, is_quant_op,
    qformat,
)
from edgecc.stored_weights import StoredWeight

PLACEHOLDER = "edgecc_qdq_weight_"


def required_opset(program: Program) -> int:
    """The lowest ONNX opset the program's quantization needs (0: none)."""
    need = 0
    for node in program.nodes("call_function"):
        if not is_quant_op(node) or is_palette_dequantize(node):
            continue
        fmt = qformat(node.args[5] if is_dequantize(node) else node.args[7])
        block = node.args[4]
        if fmt.packed or block:
            need = max(need, 21)
        elif not fmt.is_float:
            need = max(need, 13)
    return need


def extract_weights(program: Program) -> tuple[Program, list[StoredWeight], int]:
    """A copy whose stored weights are float placeholders; the weights; palettes expanded."""
    return stored_weights.extract_weights(program, PLACEHOLDER, placeholder_values=False)


def _onnx_type(dtype: str) -> int:
    from onnx import TensorProto

    return {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int4": TensorProto.INT4,
            "uint4": TensorProto.UINT4, "float16": TensorProto.FLOAT16,
            "bfloat16": TensorProto.BFLOAT16, "float8_e4m3fn": TensorProto.FLOAT8E4M3FN,
            "float8_e5m2": TensorProto.FLOAT8E5M2}[dtype]


def translation_table(opset: int) -> dict[Any, Any]:
    """onnxscript translations of edgecc's activation quantization ops at ``opset``."""
    import onnxscript

    op = getattr(onnxscript, f"opset{opset}")
    FLOAT = 1

    def q_or_cast(x, scale, zero_point, axis, block_size, qmin, qmax, dtype):
        fmt = qformat(dtype)
        if fmt.is_float:
            return op.Cast(op.Div(x, scale), to=_onnx_type(dtype))
        if (qmin, qmax) != (fmt.qmin, fmt.qmax):
            zf = op.Cast(zero_point, to=FLOAT)
            lo = op.Mul(op.Sub(op.Constant(value_float=float(qmin)), zf), scale)
            hi = op.Mul(op.Sub(op.Constant(value_float=float(qmax)), zf), scale)
            x = op.Max(op.Min(x, hi), lo)
        zp = op.Cast(zero_point, to=_onnx_type(dtype))
        if block_size:
            return op.QuantizeLinear(x, scale, zp, axis=axis, block_size=block_size)
        return op.QuantizeLinear(x, scale, zp, axis=axis)

    def dq_or_cast(q, scale, zero_point, axis, block_size, dtype):
        fmt = qformat(dtype)
        if fmt.is_float:
            return op.Mul(op.Cast(q, to=FLOAT), scale)
        zp = op.Cast(zero_point, to=_onnx_type(dtype))
        if block_size:
            return op.DequantizeLinear(q, scale, zp, axis=axis, block_size=block_size)
        return op.DequantizeLinear(q, scale, zp, axis=axis)

    def quantize(x, scale, zero_point, axis: int, block_size: int, qmin: int, qmax: int,
                 dtype: str):
        return q_or_cast(x, scale, zero_point, axis, block_size, qmin, qmax, dtype)

    def dequantize(q, scale, zero_point, axis: int, block_size: int, dtype: str,
                   out_dtype: Any = None):
        return dq_or_cast(q, scale, zero_point, axis, block_size, dtype)

    def fake_quantize(x, scale, zero_point, axis: int, block_size: int, qmin: int,
                      qmax: int, dtype: str):
        q = q_or_cast(x, scale, zero_point, axis, block_size, qmin, qmax, dtype)
        return dq_or_cast(q, scale, zero_point, axis, block_size, dtype)

    return {QUANTIZE: quantize, DEQUANTIZE: dequantize, FAKE_QUANTIZE: fake_quantize}


def insert_stored_weights(model: Any, weights: list[StoredWeight]) -> int:
    """Replace each placeholder initializer by integer data + ``DequantizeLinear``."""
    from onnx import TensorProto, helper, numpy_helper

    by_name = {w.name: w for w in weights}
    keep, nodes = [], []
    for init in model.graph.initializer:
        w = by_name.pop(init.name, None)
        if w is None:
            keep.append(init)
            continue
        fmt = qformat(w.dtype)
        scale = numpy_helper.from_array(w.scale.float().numpy(), f"{w.name}_scale")
        if fmt.is_float:
            data = numpy_helper.from_array(w.q.to(torch.float32).numpy().astype("float16")
                                           if w.dtype == "float16" else w.q.float().numpy(),
                                           f"{w.name}_q")
            keep += [data, scale]
            cast = helper.make_node("Cast", [data.name], [f"{w.name}_f"], to=TensorProto.FLOAT)
            nodes += [cast, helper.make_node("Mul", [cast.output[0], scale.name], [w.name])]
            continue
        onnx_type = _onnx_type(w.dtype)
        if fmt.packed:
            q = helper.make_tensor(f"{w.name}_q", onnx_type, w.logical_shape,
                                   w.q.contiguous().numpy().tobytes(), raw=True)
            zp_vals = (w.zero_point.to(torch.int16).flatten().tolist())
            zp = helper.make_tensor(f"{w.name}_zp", onnx_type, list(w.zero_point.shape),
                                    zp_vals)
        else:
            q = numpy_helper.from_array(w.q.numpy(), f"{w.name}_q")
            zp = numpy_helper.from_array(w.zero_point.to(fmt.storage).numpy(), f"{w.name}_zp")
        keep += [q, scale, zp]
        attrs = {}
        if w.scale.dim() > 0:
            attrs["axis"] = w.axis
        if w.block_size:
            attrs["block_size"] = w.block_size
        nodes.append(helper.make_node("DequantizeLinear", [q.name, scale.name, zp.name],
                                      [w.name], **attrs))
    if by_name:
        raise RuntimeError(f"placeholders not found in the exported model: {sorted(by_name)}")
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    old = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + old)
    return len(weights)


def insert_stored_weights_ir(model: Any, weights: list[StoredWeight]) -> int:
    """As :func:`insert_stored_weights`, on an ``onnx_ir`` model (what ``torch.onnx``
    builds), without copying: each initializer wraps the stored tensor's memory, so the
    file writer streams it to disk (bounded memory: no protobuf of the whole model)."""
    import numpy as np
    import onnx_ir as ir

    graph = model.graph
    nodes = []
    for w in weights:
        placeholder = graph.initializers.get(w.name)
        if placeholder is None:
            raise RuntimeError(f"placeholder not found in the exported model: {w.name}")
        fmt = qformat(w.dtype)
        scale = _ir_init(graph, f"{w.name}_scale", ir.Tensor(
            np.ascontiguousarray(w.scale.float().numpy())))
        if fmt.is_float:
            values = (w.q.to(torch.float32).numpy().astype("float16") if w.dtype == "float16"
                      else w.q.float().numpy())
            data = _ir_init(graph, f"{w.name}_q", ir.Tensor(np.ascontiguousarray(values)))
            cast = ir.node("Cast", [data], attributes={"to": ir.DataType.FLOAT})
            mul = ir.node("Mul", [cast.outputs[0], scale])
            nodes += [cast, mul]
            out = mul.outputs[0]
        else:
            dtype = ir.DataType(_onnx_type(w.dtype))
            if fmt.packed:
                q = ir.PackedTensor(w.q.contiguous().numpy(), dtype, shape=w.logical_shape)
                zp_vals = w.zero_point.to(torch.int16).flatten()
                if zp_vals.numel() % 2:
                    zp_vals = torch.cat((zp_vals, zp_vals.new_zeros(1)))
                zp = ir.PackedTensor(pack_int4_codes(zp_vals), dtype,
                                     shape=list(w.zero_point.shape))
            else:
                q = ir.Tensor(w.q.contiguous().numpy(), dtype=dtype)
                zp = ir.Tensor(np.ascontiguousarray(w.zero_point.to(fmt.storage).numpy()),
                               dtype=dtype)
            attrs: dict[str, Any] = {}
            if w.scale.dim() > 0:
                attrs["axis"] = w.axis
            if w.block_size:
                attrs["block_size"] = w.block_size
            node = ir.node("DequantizeLinear",
                           [_ir_init(graph, f"{w.name}_q", q), scale,
                            _ir_init(graph, f"{w.name}_zp", zp)], attributes=attrs)
            nodes.append(node)
            out = node.outputs[0]
        graph.initializers.pop(w.name)
        placeholder.replace_all_uses_with(out)
        out.name = w.name
    if nodes:
        graph.insert_before(graph[0], nodes)
    return len(weights)


def pack_int4_codes(values: torch.Tensor) -> Any:
    """Two 4-bit codes per byte, low nibble first (``values``: an even count)."""
    v = (values.to(torch.int16) & 0xF).to(torch.uint8).reshape(-1, 2)
    return (v[:, 0] | (v[:, 1] << 4)).numpy()


def _ir_init(graph: Any, name: str, tensor: Any) -> Any:
    import onnx_ir as ir

    tensor.name = name
    value = ir.Value(name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype),
                     const_value=tensor)
    graph.register_initializer(value)
    return value
