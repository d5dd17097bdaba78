"""Quantized ONNX into edgecc's quantization ops (``edgecc.quant``).

QDQ format — ``QuantizeLinear`` / ``DequantizeLinear`` (per-tensor, per-axis, blocked;
int8, uint8, int4, uint4, float8) — maps one-to-one onto ``edgecc.quantize`` /
``edgecc.dequantize`` (same rounding, saturation and layout). A ``DequantizeLinear`` of an
integer initializer is not folded at import, so the weight stays stored as integers and
the program keeps its quantization through the pipeline.

QOperator format is expanded to the same representation:
``QLinearConv`` / ``QLinearMatMul`` → dequantize inputs, float op, quantize output;
``MatMulInteger`` / ``ConvInteger`` → zero-point-shifted integer math (exact in float32 up
to 2^24); ``DynamicQuantizeLinear`` → run-time uint8 scale / zero point then quantize.
"""

from __future__ import annotations

from typing import Any

import torch

from edgecc.onnx_import.converter import Converter, Ctx, T
from edgecc.onnx_import.ops.nn import conv
from edgecc.quant import qformat

# ONNX TensorProto element types of the quantized formats.
ONNX_QTYPES = {3: "int8", 2: "uint8", 22: "int4", 21: "uint4", 17: "float8_e4m3fn",
               19: "float8_e5m2", 10: "float16", 16: "bfloat16"}
TORCH_QTYPES = {torch.int8: "int8", torch.uint8: "uint8",
                torch.float8_e4m3fn: "float8_e4m3fn", torch.float8_e5m2: "float8_e5m2"}


def input_format(ctx: Ctx, i: int, value: Any) -> str | None:
    """The quantized format of input ``i``: recorded (4-bit initializers, folded quantize
    outputs), else from its torch dtype."""
    if i < len(ctx.node.input) and ctx.node.input[i] in ctx.formats:
        return ctx.formats[ctx.node.input[i]]
    if value is None:
        return None
    return TORCH_QTYPES.get(T(value).dtype)


def output_format(ctx: Ctx, zp: Any) -> str:
    """QuantizeLinear's output format: its zero point's, else ``output_dtype``, else uint8."""
    fmt = input_format(ctx, 2, zp)
    if fmt:
        return fmt
    out = ctx.attr("output_dtype", 0)
    return ONNX_QTYPES.get(out, "uint8") if out else "uint8"


def _granularity(ctx: Ctx, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None,
                 axis_default: int = 1) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
    block = int(ctx.attr("block_size", 0) or 0)
    axis = int(ctx.attr("axis", axis_default))
    scale = T(scale)
    if scale.dim() == 0 or (scale.dim() == 1 and scale.numel() == 1 and not block):
        scale = scale.reshape(())
        zp = None if zp is None else T(zp).reshape(())
        return scale, zp, 0, 0
    rank = x.dim()
    return scale, zp, axis % rank if rank else 0, block


def _zeros(scale: torch.Tensor, fmt: str) -> torch.Tensor:
    return torch.zeros(scale.shape, dtype=qformat(fmt).zero_point_dtype)


def quantize(ctx: Ctx, x: Any, scale: Any, zp: Any, fmt: str) -> torch.Tensor:
    x = T(x)
    scale, zp, axis, block = _granularity(ctx, x, scale, zp)
    q = qformat(fmt)
    zp = _zeros(scale, fmt) if zp is None else T(zp)
    lo, hi = (0, 0) if q.is_float else (q.qmin, q.qmax)
    return torch.ops.edgecc.quantize(x, scale, zp, axis, block, lo, hi, fmt)


def dequantize(ctx: Ctx, x: Any, scale: Any, zp: Any, fmt: str,
               axis_default: int = 1) -> torch.Tensor:
    x = T(x)
    shape_probe = x
    if qformat(fmt).packed:  # granularity is about the logical (unpacked) shape
        shape_probe = x.new_empty((*x.shape[:-1], x.shape[-1] * 2))
    scale, zp, axis, block = _granularity(ctx, shape_probe, scale, zp, axis_default)
    zp = _zeros(scale, fmt) if zp is None else T(zp)
    out = scale.dtype if scale.is_floating_point() else torch.float32
    return torch.ops.edgecc.dequantize(x, scale, zp, axis, block, fmt, out)


def _quantize_linear(ctx, x, scale, zp=None):
    return quantize(ctx, x, scale, zp, output_format(ctx, zp))


def _dequantize_linear(ctx, x, scale, zp=None):
    x = T(x)
    if x.dtype == torch.int32:  # biases: plain arithmetic, folded at import
        zp_f = 0 if zp is None else T(zp).to(torch.float32)
        s = T(scale)
        axis = int(ctx.attr("axis", 1))
        if s.dim() == 1 and s.numel() > 1 and x.dim() > 1:
            view = [1] * x.dim()
            view[axis % x.dim()] = -1
            s = s.reshape(view)
            zp_f = zp_f.reshape(view) if isinstance(zp_f, torch.Tensor) else zp_f
        return (x.to(torch.float32) - zp_f) * s
    fmt = input_format(ctx, 0, x) or input_format(ctx, 2, zp)
    if fmt is None:
        raise NotImplementedError(f"DequantizeLinear of a {x.dtype} tensor")
    return dequantize(ctx, x, scale, zp, fmt)


def _dynamic_quantize_linear(ctx, x):
    x = T(x).to(torch.float32)
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    scale = (hi - lo) / 255.0
    zp = torch.clamp(torch.round(-lo / scale), 0, 255).to(torch.uint8)
    q = torch.ops.edgecc.quantize(x, scale, zp, 0, 0, 0, 255, "uint8")
    return q, scale, zp


def _dq_plain(ctx, x, scale, zp, axis):
    """Dequantize an operand of a QOperator node (its own axis convention)."""
    x = T(x)
    fmt = TORCH_QTYPES[x.dtype]
    s = T(scale)
    z = _zeros(s, fmt) if zp is None else T(zp)
    if s.numel() == 1:
        return torch.ops.edgecc.dequantize(x, s.reshape(()), z.reshape(()), 0, 0, fmt,
                                           torch.float32)
    return torch.ops.edgecc.dequantize(x, s, z, axis % x.dim(), 0, fmt, torch.float32)


def _q_plain(y, scale, zp):
    s, z = T(scale).reshape(()), T(zp).reshape(())
    fmt = TORCH_QTYPES[z.dtype]
    q = qformat(fmt)
    return torch.ops.edgecc.quantize(y, s, z, 0, 0, q.qmin, q.qmax, fmt)


def _qlinear_conv(ctx, x, xs, xz, w, ws, wz, ys, yz, b=None):
    xd = _dq_plain(ctx, x, xs, xz, 0)
    wd = _dq_plain(ctx, w, ws, wz, 0)
    bias = None
    if b is not None:  # int32 bias at scale x_scale * w_scale
        bias = T(b).to(torch.float32) * (T(xs).reshape(()) * T(ws).to(torch.float32))
    return _q_plain(conv(ctx, xd, wd, bias), ys, yz)


def _qlinear_matmul(ctx, a, as_, az, b, bs, bz, ys, yz):
    ad = _dq_plain(ctx, a, as_, az, -2)  # per-row of a
    bd = _dq_plain(ctx, b, bs, bz, -1)  # per-column of b
    return _q_plain(torch.matmul(ad, bd), ys, yz)


def _shifted(x: Any, zp: Any, axis: int) -> torch.Tensor:
    x = T(x).to(torch.float32)
    if zp is None:
        return x
    z = T(zp).to(torch.float32)
    if z.numel() > 1:
        view = [1] * x.dim()
        view[axis % x.dim()] = -1
        z = z.reshape(view)
    return x - z


def _matmul_integer(ctx, a, b, az=None, bz=None):
    y = torch.matmul(_shifted(a, az, -2), _shifted(b, bz, -1))
    return torch.round(y).to(torch.int32)


def _conv_integer(ctx, x, w, xz=None, wz=None):
    y = conv(ctx, _shifted(x, xz, 1), _shifted(w, wz, 0), None)
    return torch.round(y).to(torch.int32)


def _qgemm(ctx, a, as_, az, b, bs, bz, c=None, ys=None, yz=None):
    """onnxruntime's quantized Gemm: ``alpha · A'B' + C`` (C int32 at ``a_scale·b_scale``),
    quantized when ``y_scale`` is given, float otherwise."""
    trans_b = ctx.attr("transB", 0)
    ad = _dq_plain(ctx, a, as_, az, 0)
    bd = _dq_plain(ctx, b, bs, bz, 0 if trans_b else 1)  # per output channel
    if ctx.attr("transA", 0):
        ad = ad.t()
    y = torch.nn.functional.linear(ad, bd) if trans_b else ad @ bd
    alpha = ctx.attr("alpha", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + T(c).to(torch.float32) * (T(as_).reshape(()) * T(bs).to(torch.float32))
    return y if ys is None else _q_plain(y, ys, yz)


CONVERTERS = (
    Converter("QuantizeLinear", _quantize_linear, since_opset=10),
    Converter("DequantizeLinear", _dequantize_linear, since_opset=10),
    Converter("DynamicQuantizeLinear", _dynamic_quantize_linear, since_opset=11),
    Converter("QLinearConv", _qlinear_conv, since_opset=10),
    Converter("QLinearMatMul", _qlinear_matmul, since_opset=10),
    Converter("MatMulInteger", _matmul_integer, since_opset=10),
    Converter("ConvInteger", _conv_integer, since_opset=10),
    Converter("QGemm", _qgemm, domain="com.microsoft"),
)
