"""Relax converters for edgecc's quantization operators (``edgecc.quant``).

The host target executes quantized programs in float with integer storage: weights stay
``int8`` / packed ``int4`` in the library (that is where the memory goes) and are
dequantized by a Relax kernel; activation ``quantize → dequantize`` pairs are computed
exactly as ``edgecc.quant`` defines them (round half to even — TVM's ``round`` lowers to
``nearbyint`` — then saturate), so the host result equals the PyTorch simulator's up to
float reassociation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from edgecc.program import Program
from edgecc.quant import qformat


def _shape(node: Any) -> tuple[int, ...]:
    return tuple(int(d) if str(d).isdigit() else -1 for d in node.meta["val"].shape)


def _rank(expr: Any) -> int:
    return len(expr.ty.shape)


def _broadcast(bb: Any, p: Any, rank: int, axis: int, block: int, dim_len: int) -> Any:
    """Mirror of ``edgecc.quant.broadcast_param`` on a Relax expression."""
    from tvm import relax

    p_rank = _rank(p)
    if p_rank == 0:
        return p
    axis = axis % rank
    if block > 0:
        p = bb.emit(relax.op.repeat(p, block, axis=axis))
        if dim_len >= 0 and int(p.ty.shape[axis]) != dim_len:
            p = bb.emit(relax.op.strided_slice(p, axes=[axis], begin=[0], end=[dim_len]))
        return p
    view = [1] * rank
    view[axis] = -1
    return bb.emit(relax.op.reshape(p, view))


def _unpack_int4(bb: Any, q: Any, signed: bool) -> Any:
    from tvm import relax

    op = relax.op
    p = bb.emit(op.astype(q, "int32"))
    lo = op.bitwise_and(p, relax.const(15, "int32"))
    hi = op.bitwise_and(op.right_shift(p, relax.const(4, "int32")), relax.const(15, "int32"))
    pair = bb.emit(op.stack([lo, hi], axis=-1))
    shape = list(q.ty.shape)
    vals = bb.emit(op.reshape(pair, [*shape[:-1], shape[-1] * 2]))
    if signed:
        vals = bb.emit(op.where(op.greater_equal(vals, relax.const(8, "int32")),
                                op.subtract(vals, relax.const(16, "int32")), vals))
    return vals


def _pack_int4(bb: Any, vals: Any) -> Any:
    from tvm import relax

    op = relax.op
    v = bb.emit(op.bitwise_and(op.astype(vals, "int32"), relax.const(15, "int32")))
    shape = list(v.ty.shape)
    pairs = bb.emit(op.reshape(v, [*shape[:-1], shape[-1] // 2, 2]))
    lo = op.squeeze(op.strided_slice(pairs, axes=[len(shape)], begin=[0], end=[1]),
                    axis=[len(shape)])
    hi = op.squeeze(op.strided_slice(pairs, axes=[len(shape)], begin=[1], end=[2]),
                    axis=[len(shape)])
    packed = op.bitwise_or(lo, op.left_shift(hi, relax.const(4, "int32")))
    return bb.emit(op.astype(packed, "uint8"))


# TVM 0.27's PyTorch importer takes no float8 tensors: fp8 values are held in float16,
# which represents every e4m3fn and e5m2 value exactly.
FP8_STORAGE = {"float8_e4m3fn": "float16", "float8_e5m2": "float16"}


def widen_fp8_constants(program: Program) -> Program:
    """A copy of ``program`` whose float8 constants are stored as (exact) float16."""
    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    nodes = [n for n in program.nodes("get_attr") if program.tensor(n).dtype in fp8]
    if not nodes:
        return program
    program = program.copy()
    for node in program.nodes("get_attr"):
        value = program.tensor(node)
        if value.dtype in fp8:
            owner, _, name = str(node.target).rpartition(".")
            module = program.graph_module.get_submodule(owner) if owner else program.graph_module
            delattr(module, name)
            module.register_buffer(name, value.to(torch.float16))
    program.refresh_metadata()
    return program


# (mantissa bits, smallest normal exponent) of the fp8 formats.
FP8_LAYOUT = {"float8_e4m3fn": (3, -6), "float8_e5m2": (2, -14)}


def _round_to_fp8(bb: Any, v: Any, mbits: int, emin: int) -> Any:
    """Round float32 ``v`` (already saturated) to the nearest fp8 value, ties to even.

    TVM 0.27's float32 -> float8 cast truncates, so the rounding is written out:
    ``step = 2^(max(floor(log2|v|), emin) - mbits)``, ``round(v / step) * step`` — exact in
    float32 because ``step`` is a power of two.
    """
    from tvm import relax

    op = relax.op
    c = relax.const
    a = bb.emit(op.maximum(op.abs(v), c(2.0 ** (emin - 1), "float32")))
    e = bb.emit(op.floor(op.divide(op.log(a), c(0.6931471805599453, "float32"))))
    # log() is not exact at powers of two: correct e so that 2^e <= a < 2^(e+1).
    two = c(2.0, "float32")
    e = bb.emit(op.where(op.greater_equal(a, op.power(two, op.add(e, c(1.0, "float32")))),
                         op.add(e, c(1.0, "float32")), e))
    e = bb.emit(op.where(op.less(a, op.power(two, e)), op.subtract(e, c(1.0, "float32")), e))
    e = bb.emit(op.maximum(e, c(float(emin), "float32")))
    step = bb.emit(op.power(two, op.subtract(e, c(float(mbits), "float32"))))
    return bb.emit(op.multiply(op.round(op.divide(v, step)), step))


def _quantized_values(bb: Any, x: Any, s: Any, z: Any, node: fx.Node, axis: int, block: int,
                      qmin: int, qmax: int, dtype: str) -> Any:
    """float32 values of round(x / s) + z clamped (integers) or the float cast."""
    from tvm import relax

    op = relax.op
    fmt = qformat(dtype)
    shape = _shape(node.args[0])
    rank = len(shape)
    dim = shape[axis % rank] if rank else -1
    xf = bb.emit(op.astype(x, "float32"))
    sb = _broadcast(bb, bb.emit(op.astype(s, "float32")), rank, axis, block, dim)
    scaled = bb.emit(op.divide(xf, sb))
    if fmt.is_float:
        lim = fmt.float_max
        clipped = bb.emit(op.clip(scaled, -lim, lim))
        if dtype in FP8_LAYOUT:
            return _round_to_fp8(bb, clipped, *FP8_LAYOUT[dtype]), sb
        return bb.emit(op.astype(bb.emit(op.astype(clipped, dtype)), "float32")), sb
    zb = _broadcast(bb, bb.emit(op.astype(z, "float32")), rank, axis, block, dim)
    q = bb.emit(op.clip(op.add(op.round(scaled), zb), qmin, qmax))
    return q, (sb, zb)


def quantize(node: fx.Node, importer: Any) -> Any:
    from tvm import relax

    bb = importer.block_builder
    env = importer.env
    x, s, z = (env[a] for a in node.args[:3])
    axis, block, qmin, qmax, dtype = node.args[3:8]
    fmt = qformat(dtype)
    q, _ = _quantized_values(bb, x, s, z, node, axis, block, qmin, qmax, dtype)
    if fmt.is_float:
        return bb.emit(relax.op.astype(q, FP8_STORAGE.get(dtype, dtype)))
    if fmt.packed:
        return _pack_int4(bb, q)
    return bb.emit(relax.op.astype(q, dtype))


def _dequantized(bb: Any, node: fx.Node, q: Any, s: Any, z: Any, axis: int, block: int,
                 dtype: str) -> Any:
    """float32 ``(q - z) * s`` (``edgecc.quant``'s definition) of ``node``'s codes."""
    from tvm import relax

    op = relax.op
    fmt = qformat(dtype)
    vals = _unpack_int4(bb, q, fmt.signed) if fmt.packed else q
    shape = _shape(node)
    rank = len(shape)
    dim = shape[axis % rank] if rank else -1
    vf = bb.emit(op.astype(vals, "float32"))
    sb = _broadcast(bb, bb.emit(op.astype(s, "float32")), rank, axis, block, dim)
    if not fmt.is_float:
        zb = _broadcast(bb, bb.emit(op.astype(z, "float32")), rank, axis, block, dim)
        vf = bb.emit(op.subtract(vf, zb))
    return bb.emit(op.multiply(vf, sb))


def dequantize(node: fx.Node, importer: Any) -> Any:
    from tvm import relax

    env = importer.env
    q, s, z = (env[a] for a in node.args[:3])
    axis, block, dtype, out_dtype = node.args[3:7]
    y = _dequantized(importer.block_builder, node, q, s, z, axis, block, dtype)
    out = str(out_dtype).replace("torch.", "")
    return y if out == "float32" else importer.block_builder.emit(relax.op.astype(y, out))


def dequantize_offset(node: fx.Node, importer: Any) -> Any:
    """``(q - z) * s + offset`` (float32, then ``out_dtype``): the float path, which TVM
    folds at compile time for constant weights; a linear's weight on x86 takes the
    weight-only kernel instead (``WeightOnlyKernels``)."""
    from tvm import relax

    op = relax.op
    bb = importer.block_builder
    env = importer.env
    q, s, z, o = (env[a] for a in node.args[:4])
    axis, block, dtype, out_dtype = node.args[4:8]
    y = _dequantized(bb, node, q, s, z, axis, block, dtype)
    shape = _shape(node)
    rank = len(shape)
    dim = shape[axis % rank] if rank else -1
    y = bb.emit(op.add(y, _broadcast(bb, bb.emit(op.astype(o, "float32")), rank, axis, block,
                                     dim)))
    out = str(out_dtype).replace("torch.", "")
    return y if out == "float32" else bb.emit(op.astype(y, out))


def fake_quantize(node: fx.Node, importer: Any) -> Any:
    from tvm import relax

    op = relax.op
    bb = importer.block_builder
    env = importer.env
    x, s, z = (env[a] for a in node.args[:3])
    axis, block, qmin, qmax, dtype = node.args[3:8]
    fmt = qformat(dtype)
    q, params = _quantized_values(bb, x, s, z, node, axis, block, qmin, qmax, dtype)
    if fmt.is_float:
        y = bb.emit(op.multiply(q, params))
    else:
        sb, zb = params
        y = bb.emit(op.multiply(op.subtract(q, zb), sb))
    out = x.ty.dtype
    return y if out == "float32" else bb.emit(op.astype(y, out))


def palette_dequantize(node: fx.Node, importer: Any) -> Any:
    import numpy as np
    from tvm import relax

    op = relax.op
    bb = importer.block_builder
    codes, lut = importer.env[node.args[0]], importer.env[node.args[1]]
    bits, group, out_dtype = node.args[2:5]
    p = bb.emit(op.astype(codes, "int32"))
    shape = [int(d) for d in node.args[0].meta["val"].shape]
    if bits < 8:
        per = 8 // bits
        mask = relax.const((1 << bits) - 1, "int32")
        parts = [bb.emit(op.bitwise_and(op.right_shift(p, relax.const(bits * i, "int32")),
                                        mask)) for i in range(per)]
        stacked = bb.emit(op.stack(parts, axis=-1))
        p = bb.emit(op.reshape(stacked, [*shape[:-1], shape[-1] * per]))
        shape = [*shape[:-1], shape[-1] * per]
    n_codes = int(node.args[1].meta["val"].shape[1])
    rows = shape[0]
    offsets = (np.arange(rows) // group if group > 0 else np.zeros(rows, dtype=np.int64))
    offsets = (offsets * n_codes).astype("int32").reshape([rows] + [1] * (len(shape) - 1))
    flat = bb.emit(op.add(p, relax.const(offsets, "int32")))
    table = bb.emit(op.astype(lut, "float32"))
    table = bb.emit(op.reshape(table, [-1]))
    flat = bb.emit(op.reshape(flat, [-1]))
    y = bb.emit(op.take(table, flat, axis=0))
    y = bb.emit(op.reshape(y, shape))
    out = str(out_dtype).replace("torch.", "")
    return y if out == "float32" else bb.emit(op.astype(y, out))


CONVERTERS = {
    "palette_dequantize.default": palette_dequantize,
    "quantize.default": quantize,
    "dequantize.default": dequantize,
    "dequantize_offset.default": dequantize_offset,
    "fake_quantize.default": fake_quantize,
}


class WeightOnlyKernels:
    """Converters for ``linear`` / ``linear_act`` whose weight is ``edgecc.dequantize`` or
    ``edgecc.dequantize_offset`` of constants (w4a16, w8a16, GGUF Q4_0 / Q4_1 / Q8_0):
    one call to the x86 weight-only kernel (``x86_wonly``) reading the packed codes,
    instead of a float32 weight folded at compile time.

    Before::   %w = edgecc.dequantize(@q, @s, @z, 1, 32, 'int4', f32)
               %y = aten.linear(%x, %w, @b)
    After::    %y = call_dps_packed("edgecc_x86_wlinear", %x, @codes, @s, @z, @o, @b, @meta)

    A quantized linear that cannot take the kernel (a non-constant weight, a symbolic
    shape, a format it does not hold) stays float, with a note naming it (``notes``).
    """

    def __init__(self, constants: dict[str, Any], notes: list[str],
                 bf16_activations: bool = False):
        self.constants, self.notes = constants, notes
        self.bf16_activations = bf16_activations  # x86_wonly.emit_linear's
        self.stats = {"weight_only_layers": 0, "weight_only_bytes": 0,
                      "float32_weight_bytes": 0, "weight_only_float": 0}

    @property
    def used(self) -> bool:
        return self.stats["weight_only_layers"] > 0

    def _const(self, n: Any) -> Any:
        return self.constants.get(n.name) if isinstance(n, fx.Node) else None

    def linear(self, fallback: Any) -> Any:
        def convert(node: fx.Node, importer: Any) -> Any:
            out = self._kernel(node, importer)
            return out if out is not None else fallback(node, importer)

        return convert

    def _kernel(self, node: fx.Node, importer: Any) -> Any | None:
        from edgecc.quant import is_dequantize, is_dequantize_offset
        from edgecc.targets.tvm import x86_wonly

        w = node.args[1]
        offset = is_dequantize_offset(w)
        if not (is_dequantize(w) or offset):
            return None
        nq = 4 if offset else 3
        axis, block, dtype, out_dtype = w.args[nq:nq + 4]
        values = [self._const(a) for a in w.args[:nq]] + ([] if offset else [None])
        packed, why = (None, f"the weight is {out_dtype}") \
            if str(out_dtype) != "torch.float32" else \
            x86_wonly.plan(values, axis, block, dtype)
        bias = node.args[2] if len(node.args) > 2 else None
        bias_value = self._const(bias)
        out = None
        if packed is not None:
            bb = importer.block_builder
            out = x86_wonly.emit_linear(bb, importer.env[node.args[0]], packed, bias_value,
                                        bf16_activations=self.bf16_activations)
            why = "float32 input of static shape needed"
        if out is None:
            self.notes.append(f"{node.name}: quantized linear runs with float32 weights "
                              f"({why})")
            self.stats["weight_only_float"] += 1
            return None
        from tvm import relax

        if bias is not None and bias_value is None:  # a computed bias
            out = bb.emit(relax.op.add(out, importer.env[bias]))
        self.stats["weight_only_layers"] += 1
        self.stats["weight_only_bytes"] += packed.nbytes
        self.stats["float32_weight_bytes"] += 4 * packed.n * packed.k
        act = node.args[3] if len(node.args) > 3 and isinstance(node.args[3], str) else None
        if act is None:
            return out
        from edgecc.targets.tvm.converters import emit_activation

        return emit_activation(bb, out, act)


def weight_only_converters(converters: dict[str, Any], constants: dict[str, Any],
                           notes: list[str], bf16_activations: bool = False
                           ) -> WeightOnlyKernels:
    """Route quantized-weight linears in ``converters`` (in place) to the x86 weight-only
    kernel (``WeightOnlyKernels``); ``bf16_activations``:
    ``edgecc.quant.quantized_by_edgecc``."""
    kernels = WeightOnlyKernels(constants, notes, bf16_activations)
    for name in ("linear.default", "linear_act.default"):
        converters[name] = kernels.linear(converters[name])
    return kernels
