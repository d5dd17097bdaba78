"""C codegen for NPUs whose description says ``codegen: c`` (``generic-int8``).

Each region (a function the BYOC flow gave the ``Codegen`` attribute, see ``byoc.py``)
becomes one C++ function exported with TVM FFI (``TVM_FFI_DLL_EXPORT_TYPED_FUNC``) under the
function's global symbol, so the TVM library calls it through ``call_dps_packed`` and a test
can call it by name. Its arguments are int8 tensors in the Relax graph's layout (NCHW when
4-D), copied to and from NHWC buffers inside; each op of the region is a static function.
The arithmetic is the simulator's, line for line: int32/int64 accumulation of
``(x - zp_x) * w`` plus the int32 bias, TFLite's ``MultiplyByQuantizedMultiplier`` (SaturatingRoundingDoublingHighMul, then
RoundingDivideByPOT) with the per-channel (multiplier, shift) computed here by the
simulator's own ``quantize_multiplier``, the output zero point, and the clamp of
``activation_range``. Weights, bias and the requantization tables are C arrays in the
source, so the library carries them. Table activations are the simulator's 256-entry
tables as C arrays; SOFTMAX is TFLite's int8 reference arithmetic (gemmlowp's fixed-point
exp and Newton-Raphson reciprocal, ``_SOFTMAX_HELPERS``), line for line with the simulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecc.targets.npu.region import LUT_KINDS, Region, same_padding
from edgecc.targets.npu.simulator import _conv_scales, activation_range, quantize_multiplier

PRELUDE = r"""
#include <tvm/ffi/function.h>
#include <tvm/ffi/container/tensor.h>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {
inline int64_t edgecc_srdhm(int64_t a, int64_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = a * b;
  int64_t s = ab + (ab >= 0 ? (int64_t(1) << 30) : (int64_t(1) - (int64_t(1) << 30)));
  return s >= 0 ? (s >> 31) : -((-s) >> 31);
}
inline int64_t edgecc_rdbpot(int64_t x, int exponent) {
  if (exponent == 0) return x;
  int64_t mask = (int64_t(1) << exponent) - 1;
  int64_t remainder = x & mask;
  int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}
inline int64_t edgecc_requant(int64_t x, int64_t multiplier, int shift) {
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  int32_t shifted = static_cast<int32_t>(static_cast<uint32_t>(
      static_cast<uint64_t>(x) << left));
  return edgecc_rdbpot(edgecc_srdhm(shifted, multiplier), right);
}
}  // namespace
"""


def symbol(region: Region, suffix: str = "") -> str:
    """The exported C name of a region's function (``suffix`` keeps bundles apart)."""
    name = "".join(c if c.isalnum() else "_" for c in region.name)
    return f"edgecc_npu_{name}{'_' + suffix if suffix else ''}"


def _array(ctype: str, name: str, values) -> str:
    flat = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in flat) or "0"
    return f"static const {ctype} {name}[{max(flat.size, 1)}] = {{{body}}};"


def _requant_tables(sym: str, real_scales) -> list[str]:
    pairs = [quantize_multiplier(float(s)) for s in real_scales]
    return [_array("int64_t", f"{sym}_mult", [m for m, _ in pairs]),
            _array("int32_t", f"{sym}_shift", [s for _, s in pairs])]


def _op_function(region: Region, op: Any, fname: str) -> str:
    """``static void fname(inputs..., int8_t* y)``: one region op on NHWC int8 buffers."""
    t = region.tensors
    if op.kind == "add":
        return _add_source(region, op, fname)
    if op.kind == "batch_matmul":
        return _batch_matmul_source(region, op, fname)
    if op.kind in _DATA_OPS:
        return _DATA_OPS[op.kind](region, op, fname)
    if op.kind == "pad":
        xs, ys = t[op.inputs[0]], t[op.outputs[0]]
        n, h, w, c = xs.shape
        _, oh, ow, _ = ys.shape
        pt, pl, _, _ = op.attrs["pads"]
        return (f"static void {fname}(const int8_t* x, int8_t* y) {{\n"
                f"  for (int i = 0; i < {n * oh * ow * c}; ++i) y[i] = {ys.quant.zero_point[0]};\n"
                f"  for (int b = 0; b < {n}; ++b) for (int iy = 0; iy < {h}; ++iy)\n"
                f"  for (int ix = 0; ix < {w}; ++ix) for (int ic = 0; ic < {c}; ++ic)\n"
                f"    y[((b * {oh} + iy + {pt}) * {ow} + ix + {pl}) * {c} + ic] = "
                f"x[((b * {h} + iy) * {w} + ix) * {c} + ic];\n}}\n")
    if op.kind not in ("conv2d", "depthwise_conv2d", "fully_connected"):
        raise NotImplementedError(f"C codegen: no kernel for region op {op.kind!r}")
    sym = fname
    xs, ws, bs, ys = (t[op.inputs[0]], t[op.inputs[1]], t[op.inputs[2]], t[op.outputs[0]])
    zx, zy = xs.quant.zero_point[0], ys.quant.zero_point[0]
    lo, hi = activation_range(op.attrs["activation"], ys.quant.scale[0], zy)
    scales = np.broadcast_to(_conv_scales(xs, ws, ys), (ys.shape[-1],))
    lines = [f"// {op.kind} -> {op.outputs[0]}",
             _array("int8_t", f"{sym}_w", ws.data), _array("int32_t", f"{sym}_b", bs.data),
             *_requant_tables(sym, scales)]
    epilogue = (f"      int64_t v = edgecc_requant(acc, {sym}_mult[oc], {sym}_shift[oc]) + {zy};\n"
                f"      v = v < {lo} ? {lo} : (v > {hi} ? {hi} : v);\n")
    if op.kind == "fully_connected":
        rows, k = xs.shape
        o = ws.shape[0]
        body = (f"  for (int r = 0; r < {rows}; ++r) {{\n"
                f"    for (int oc = 0; oc < {o}; ++oc) {{\n"
                f"      int64_t acc = {sym}_b[oc];\n"
                f"      for (int i = 0; i < {k}; ++i)\n"
                f"        acc += (int64_t(x[r * {k} + i]) - ({zx})) * {sym}_w[oc * {k} + i];\n"
                + epilogue +
                f"      y[r * {o} + oc] = static_cast<int8_t>(v);\n"
                "    }\n  }\n")
    else:
        n, h, w, c = xs.shape
        _, oh, ow, oc_n = ys.shape
        kh, kw = ws.shape[1], ws.shape[2]
        (sh, sw), (dh, dw) = op.attrs["stride"], op.attrs["dilation"]
        if op.attrs["padding"] == "SAME":
            pt, pl = same_padding(h, kh, sh, dh)[0], same_padding(w, kw, sw, dw)[0]
        else:
            pt = pl = 0
        if op.kind == "conv2d":
            tap = (f"          for (int ic = 0; ic < {c}; ++ic)\n"
                   f"            acc += (int64_t(x[((b * {h} + iy) * {w} + ix) * {c} + ic]) "
                   f"- ({zx})) * {sym}_w[((oc * {kh} + i) * {kw} + j) * {c} + ic];\n")
        else:
            m = op.attrs.get("depth_multiplier", 1)
            tap = (f"          acc += (int64_t(x[((b * {h} + iy) * {w} + ix) * {c} + oc / {m}]) "
                   f"- ({zx})) * {sym}_w[(i * {kw} + j) * {oc_n} + oc];\n")
        body = (f"  for (int b = 0; b < {n}; ++b)\n"
                f"  for (int oy = 0; oy < {oh}; ++oy)\n"
                f"  for (int ox = 0; ox < {ow}; ++ox) {{\n"
                f"    for (int oc = 0; oc < {oc_n}; ++oc) {{\n"
                f"      int64_t acc = {sym}_b[oc];\n"
                f"      for (int i = 0; i < {kh}; ++i) {{\n"
                f"        int iy = oy * {sh} - {pt} + i * {dh};\n"
                f"        if (iy < 0 || iy >= {h}) continue;\n"
                f"        for (int j = 0; j < {kw}; ++j) {{\n"
                f"          int ix = ox * {sw} - {pl} + j * {dw};\n"
                f"          if (ix < 0 || ix >= {w}) continue;\n"
                + tap +
                "        }\n      }\n"
                + epilogue +
                f"      y[((b * {oh} + oy) * {ow} + ox) * {oc_n} + oc] = static_cast<int8_t>(v);\n"
                "    }\n  }\n")
    lines += [f"static void {fname}(const int8_t* x, int8_t* y) {{", body + "}", ""]
    return "\n".join(lines)


def _boundary_copy(shape: tuple[int, ...], src: str, dst: str, to_region: bool) -> str:
    """Copy between a boundary tensor (NCHW when 4-D, else flat rows) and its NHWC region
    buffer."""
    size = int(np.prod(shape))
    if len(shape) != 4:
        return f"  std::memcpy({dst}, {src}, {size});\n"
    n, h, w, c = shape
    nhwc = f"((b * {h} + y_) * {w} + x_) * {c} + c_"
    nchw = f"((b * {c} + c_) * {h} + y_) * {w} + x_"
    d, s_ = (nhwc, nchw) if to_region else (nchw, nhwc)
    return (f"  for (int b = 0; b < {n}; ++b) for (int c_ = 0; c_ < {c}; ++c_)\n"
            f"  for (int y_ = 0; y_ < {h}; ++y_) for (int x_ = 0; x_ < {w}; ++x_)\n"
            f"    {dst}[{d}] = {src}[{s_}];\n")


def region_source(region: Region, sym: str) -> str:
    """The C++ function of a region (any chain of conv2d, depthwise_conv2d,
    fully_connected, batch_matmul, add and pad ops): its arguments are the region's inputs then its
    outputs (destination passing), 4-D ones NCHW (the Relax graph's layout), converted to
    and from the region's NHWC buffers inside."""
    parts = [f"// region {region.name}"]
    for i, op in enumerate(region.ops):
        parts.append(_op_function(region, op, f"{sym}_op{i}"))
    buffers = {n: f"buf{j}" for j, n in enumerate(region.tensors)
               if not region.tensors[n].is_constant}
    args = [f"tvm::ffi::TensorView a{j}" for j in range(len(region.inputs) + len(region.outputs))]
    body = [f"static int {sym}_impl({', '.join(args)}) {{"]
    for n, b in buffers.items():
        body.append(f"  std::vector<int8_t> {b}({int(np.prod(region.tensors[n].shape))});")
    for j, n in enumerate(region.inputs):
        body.append(_boundary_copy(region.tensors[n].shape,
                                   f"static_cast<const int8_t*>(a{j}.data_ptr())",
                                   f"{buffers[n]}.data()", True).rstrip("\n"))
    for i, op in enumerate(region.ops):
        ins = [f"{buffers[x]}.data()" for x in op.inputs if x in buffers]
        body.append(f"  {sym}_op{i}({', '.join(ins + [buffers[op.outputs[0]] + '.data()'])});")
    for j, n in enumerate(region.outputs):
        k = len(region.inputs) + j
        body.append(_boundary_copy(region.tensors[n].shape, f"{buffers[n]}.data()",
                                   f"static_cast<int8_t*>(a{k}.data_ptr())", False).rstrip("\n"))
    body += ["  return 0;", "}", f"TVM_FFI_DLL_EXPORT_TYPED_FUNC({sym}, {sym}_impl);", ""]
    return "\n".join(parts + body)


def _add_source(region: Region, op: Any, fname: str) -> str:
    """TFLite int8 ADD (simulator.add): both inputs to a common 2^20-scaled domain, summed,
    rescaled to the output."""
    t = region.tensors
    as_, bs, ys = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    left_shift = 20
    sa, sb = (np.float64(np.float32(x.quant.scale[0])) for x in (as_, bs))
    sy = np.float64(np.float32(ys.quant.scale[0]))
    twice_max = 2.0 * max(sa, sb)
    ma, sha = quantize_multiplier(sa / twice_max)
    mb, shb = quantize_multiplier(sb / twice_max)
    my, shy = quantize_multiplier(twice_max / ((1 << left_shift) * sy))
    za, zb, zy = as_.quant.zero_point[0], bs.quant.zero_point[0], ys.quant.zero_point[0]
    lo, hi = activation_range(op.attrs["activation"], ys.quant.scale[0], zy)
    size = int(np.prod(ys.shape))
    return "\n".join([
        f"// add -> {op.outputs[0]}",
        f"static void {fname}(const int8_t* a, const int8_t* b, int8_t* y) {{",
        f"  for (int i = 0; i < {size}; ++i) {{",
        f"    int64_t xa = (int64_t(a[i]) - ({za})) * (int64_t(1) << {left_shift});",
        f"    int64_t xb = (int64_t(b[i]) - ({zb})) * (int64_t(1) << {left_shift});",
        f"    int64_t total = edgecc_requant(xa, {ma}, {sha}) + edgecc_requant(xb, {mb}, {shb});",
        f"    int64_t v = edgecc_requant(total, {my}, {shy}) + ({zy});",
        f"    v = v < {lo} ? {lo} : (v > {hi} ? {hi} : v);",
        "    y[i] = static_cast<int8_t>(v);",
        "  }",
        "}", ""])


def _batch_matmul_source(region: Region, op: Any, fname: str) -> str:
    """TFLite int8 BATCH_MATMUL (simulator.batch_matmul): (B, M, K) x (B, K, N), int32
    sums of (a - zp_a) * (b - zp_b), one requantization multiplier."""
    t = region.tensors
    as_, bs, ys = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    bt, m, k = as_.shape
    n = bs.shape[2]
    real = (np.float64(np.float32(as_.quant.scale[0])) * np.float64(np.float32(bs.quant.scale[0]))
            / np.float64(np.float32(ys.quant.scale[0])))
    mult, shift = quantize_multiplier(real)
    za, zb, zy = as_.quant.zero_point[0], bs.quant.zero_point[0], ys.quant.zero_point[0]
    lo, hi = activation_range(op.attrs.get("activation", "NONE"), ys.quant.scale[0], zy)
    return "\n".join([
        f"// batch_matmul -> {op.outputs[0]}",
        f"static void {fname}(const int8_t* a, const int8_t* b, int8_t* y) {{",
        f"  for (int p = 0; p < {bt}; ++p) for (int i = 0; i < {m}; ++i)",
        f"  for (int j = 0; j < {n}; ++j) {{",
        "    int64_t acc = 0;",
        f"    for (int q = 0; q < {k}; ++q)",
        f"      acc += (int64_t(a[(p * {m} + i) * {k} + q]) - ({za})) * "
        f"(int64_t(b[(p * {k} + q) * {n} + j]) - ({zb}));",
        f"    int64_t v = edgecc_requant(acc, {mult}, {shift}) + ({zy});",
        f"    v = v < {lo} ? {lo} : (v > {hi} ? {hi} : v);",
        f"    y[(p * {m} + i) * {n} + j] = static_cast<int8_t>(v);",
        "  }",
        "}", ""])


def _requant_line(xs, ys, value: str) -> list[str]:
    """``y[i] = `` the int8 requantization of ``value`` (x - zp_x) from xs's scale to ys's."""
    real = np.float64(np.float32(xs.quant.scale[0])) / np.float64(np.float32(ys.quant.scale[0]))
    m, sh = quantize_multiplier(real)
    zy = ys.quant.zero_point[0]
    return [f"    int64_t v = edgecc_requant({value}, {m}, {sh}) + ({zy});",
            "    y[i] = static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v));"]


def _quantize_source(region: Region, op: Any, fname: str) -> str:
    xs, ys = region.tensors[op.inputs[0]], region.tensors[op.outputs[0]]
    size = int(np.prod(ys.shape))
    return "\n".join([f"// quantize -> {op.outputs[0]}",
                      f"static void {fname}(const int8_t* x, int8_t* y) {{",
                      f"  for (int i = 0; i < {size}; ++i) {{",
                      *_requant_line(xs, ys, f"int64_t(x[i]) - ({xs.quant.zero_point[0]})"),
                      "  }", "}", ""])


def _reshape_source(region: Region, op: Any, fname: str) -> str:
    size = int(np.prod(region.tensors[op.outputs[0]].shape))
    return (f"static void {fname}(const int8_t* x, int8_t* y) {{ std::memcpy(y, x, {size}); }}"
            "\n")


def _transpose_source(region: Region, op: Any, fname: str) -> str:
    shape = region.tensors[op.inputs[0]].shape
    perm = op.attrs["perm"]
    rank = len(shape)
    strides = [int(np.prod(shape[i + 1:])) for i in range(rank)]
    out_shape = [shape[p] for p in perm]
    loops = "".join(f"  for (int i{d} = 0; i{d} < {out_shape[d]}; ++i{d})\n" for d in range(rank))
    src = " + ".join(f"i{d} * {strides[perm[d]]}" for d in range(rank))
    return (f"static void {fname}(const int8_t* x, int8_t* y) {{\n  int o = 0;\n{loops}"
            f"    y[o++] = x[{src}];\n}}\n")


def _mul_source(region: Region, op: Any, fname: str) -> str:
    t = region.tensors
    as_, bs, ys = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    real = (np.float64(np.float32(as_.quant.scale[0])) * np.float64(np.float32(bs.quant.scale[0]))
            / np.float64(np.float32(ys.quant.scale[0])))
    m, sh = quantize_multiplier(real)
    za, zb, zy = as_.quant.zero_point[0], bs.quant.zero_point[0], ys.quant.zero_point[0]
    lo, hi = activation_range(op.attrs.get("activation", "NONE"), ys.quant.scale[0], zy)
    size = int(np.prod(ys.shape))
    return "\n".join([
        f"// mul -> {op.outputs[0]}",
        f"static void {fname}(const int8_t* a, const int8_t* b, int8_t* y) {{",
        f"  for (int i = 0; i < {size}; ++i) {{",
        f"    int64_t p = (int64_t(a[i]) - ({za})) * (int64_t(b[i]) - ({zb}));",
        f"    int64_t v = edgecc_requant(p, {m}, {sh}) + ({zy});",
        f"    y[i] = static_cast<int8_t>(v < {lo} ? {lo} : (v > {hi} ? {hi} : v));",
        "  }", "}", ""])


def _pool_source(region: Region, op: Any, fname: str) -> str:
    """simulator.max_pool2d / avg_pool2d: in-bounds taps only; the average rounds half away
    from zero (C truncating division of total +- count / 2)."""
    xs, ys = region.tensors[op.inputs[0]], region.tensors[op.outputs[0]]
    n, h, w, c = xs.shape
    _, oh, ow, _ = ys.shape
    (kh, kw), (sh, sw) = op.attrs["kernel"], op.attrs["stride"]
    if op.attrs["padding"] == "SAME":
        pt, pl = same_padding(h, kh, sh, 1)[0], same_padding(w, kw, sw, 1)[0]
    else:
        pt = pl = 0
    lo, hi = activation_range(op.attrs.get("activation", "NONE"), ys.quant.scale[0],
                              ys.quant.zero_point[0])
    is_max = op.kind == "max_pool2d"
    init = "int64_t m = INT64_MIN;" if is_max else "int64_t total = 0, count = 0;"
    tap = ("m = x_ > m ? x_ : m;" if is_max else "total += x_; ++count;")
    result = ("int64_t v = m;" if is_max else
              "int64_t num = total > 0 ? total + count / 2 : total - count / 2;\n"
              "      int64_t v = num / count;")
    return (f"// {op.kind} -> {op.outputs[0]}\n"
            f"static void {fname}(const int8_t* x, int8_t* y) {{\n"
            f"  for (int b = 0; b < {n}; ++b) for (int oy = 0; oy < {oh}; ++oy)\n"
            f"  for (int ox = 0; ox < {ow}; ++ox) for (int ch = 0; ch < {c}; ++ch) {{\n"
            f"      {init}\n"
            f"      for (int i = 0; i < {kh}; ++i) for (int j = 0; j < {kw}; ++j) {{\n"
            f"        int iy = oy * {sh} - {pt} + i, ix = ox * {sw} - {pl} + j;\n"
            f"        if (iy < 0 || iy >= {h} || ix < 0 || ix >= {w}) continue;\n"
            f"        int64_t x_ = x[((b * {h} + iy) * {w} + ix) * {c} + ch];\n"
            f"        {tap}\n      }}\n"
            f"      {result}\n"
            f"      y[((b * {oh} + oy) * {ow} + ox) * {c} + ch] = "
            f"static_cast<int8_t>(v < {lo} ? {lo} : (v > {hi} ? {hi} : v));\n"
            "  }\n}\n")


def _mean_source(region: Region, op: Any, fname: str) -> str:
    """simulator.mean: sum of (x - zp_x) over H and W, one requantization."""
    from edgecc.targets.npu.simulator import mean_multiplier

    xs, ys = region.tensors[op.inputs[0]], region.tensors[op.outputs[0]]
    n, h, w, c = xs.shape
    m, sh = mean_multiplier(xs, ys, h * w)
    zx, zy = xs.quant.zero_point[0], ys.quant.zero_point[0]
    return (f"// mean -> {op.outputs[0]}\n"
            f"static void {fname}(const int8_t* x, int8_t* y) {{\n"
            f"  for (int b = 0; b < {n}; ++b) for (int ch = 0; ch < {c}; ++ch) {{\n"
            "    int64_t acc = 0;\n"
            f"    for (int i = 0; i < {h * w}; ++i) acc += int64_t(x[(b * {h * w} + i) * {c} + ch])"
            f" - ({zx});\n"
            f"    int64_t v = edgecc_requant(acc, {m}, {sh}) + ({zy});\n"
            f"    y[b * {c} + ch] = static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v));\n"
            "  }\n}\n")


def _strided_slice_source(region: Region, op: Any, fname: str) -> str:
    """simulator's strided slice: every output index maps to begin + i * stride."""
    shape = region.tensors[op.inputs[0]].shape
    out_shape = region.tensors[op.outputs[0]].shape
    rank = len(shape)
    strides = [int(np.prod(shape[i + 1:])) for i in range(rank)]
    loops = "".join(f"  for (int i{d} = 0; i{d} < {out_shape[d]}; ++i{d})\n" for d in range(rank))
    src = " + ".join(f"({b} + i{d} * {st}) * {strides[d]}" for d, (b, st) in enumerate(
        zip(op.attrs["begin"], op.attrs["strides"])))
    return (f"// strided_slice -> {op.outputs[0]}\n"
            f"static void {fname}(const int8_t* x, int8_t* y) {{\n  int o = 0;\n{loops}"
            f"    y[o++] = x[{src}];\n}}\n")


def _concat_source(region: Region, op: Any, fname: str) -> str:
    """CONCATENATION (inputs share the output's quantization): each input's rows of the
    inner block, one after another along the axis."""
    axis = op.attrs["axis"]
    shapes = [region.tensors[x].shape for x in op.inputs]
    outer = int(np.prod(shapes[0][:axis]))
    blocks = [int(np.prod(sh[axis:])) for sh in shapes]
    total = sum(blocks)
    args = ", ".join(f"const int8_t* x{i}" for i in range(len(shapes)))
    body, offset = [], 0
    for i, blk in enumerate(blocks):
        body.append(f"    std::memcpy(y + o * {total} + {offset}, x{i} + o * {blk}, {blk});")
        offset += blk
    return "\n".join([f"// concat -> {op.outputs[0]}",
                      f"static void {fname}({args}, int8_t* y) {{",
                      f"  for (int o = 0; o < {outer}; ++o) {{", *body, "  }", "}", ""])


_SOFTMAX_HELPERS = r"""
inline int64_t edgecc_wrap32(int64_t v) {
  return static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(
      static_cast<uint64_t>(v))));
}
inline int64_t edgecc_sat_shl(int64_t x, int k) {
  int64_t v = x * (int64_t(1) << k);
  return v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : v);
}
inline int64_t edgecc_exp_neg(int64_t a) {  // gemmlowp exp_on_negative_values, Q5.26 -> Q0.31
  const int64_t quarter = int64_t(1) << 24;
  int64_t mod = (a & (quarter - 1)) - quarter;
  int64_t x = edgecc_sat_shl(mod, 5) + (int64_t(1) << 28);
  int64_t x2 = edgecc_srdhm(x, x), x3 = edgecc_srdhm(x2, x), x4 = edgecc_srdhm(x2, x2);
  int64_t poly = edgecc_rdbpot(edgecc_srdhm(edgecc_rdbpot(x4, 2) + x3, 715827883) + x2, 1);
  int64_t result = 1895147668 + edgecc_srdhm(1895147668, x + poly);
  int64_t remainder = mod - a;
  static const int64_t mult[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535,
                                  720401, 242};
  for (int i = 0; i < 7; ++i)
    if (remainder & (int64_t(1) << (24 + i))) result = edgecc_srdhm(result, mult[i]);
  return a == 0 ? INT32_MAX : result;
}
inline int64_t edgecc_one_over_one_plus_x(int64_t a) {  // gemmlowp, Newton-Raphson
  int64_t total = a + INT32_MAX;
  int64_t half = (total + (total >= 0 ? 1 : -1)) / 2;
  int64_t x = 1515870810 + edgecc_srdhm(half, -1010580540);
  for (int i = 0; i < 3; ++i) {
    int64_t one_minus = (int64_t(1) << 29) - edgecc_srdhm(half, x);
    x = x + edgecc_sat_shl(edgecc_srdhm(x, one_minus), 2);
  }
  return edgecc_sat_shl(x, 1);
}
"""


def _softmax_source(region: Region, op: Any, fname: str) -> str:
    """simulator.softmax (TFLite's int8 reference arithmetic) over the last axis."""
    from edgecc.targets.npu.simulator import softmax_params

    xs = region.tensors[op.inputs[0]]
    depth = xs.shape[-1]
    rows = int(np.prod(xs.shape[:-1]))
    m, shift, diff_min = softmax_params(xs, op.attrs.get("beta", 1.0))
    return "\n".join([
        f"// softmax -> {op.outputs[0]}",
        f"static void {fname}(const int8_t* x, int8_t* y) {{",
        f"  int64_t exps[{depth}];",
        f"  for (int r = 0; r < {rows}; ++r) {{",
        f"    const int8_t* xr = x + r * {depth};",
        "    int64_t mx = -128, total = 0;",
        f"    for (int c = 0; c < {depth}; ++c) mx = xr[c] > mx ? xr[c] : mx;",
        f"    for (int c = 0; c < {depth}; ++c) {{",
        "      int64_t diff = xr[c] - mx;",
        f"      exps[c] = diff >= {diff_min} ? edgecc_exp_neg(edgecc_srdhm(edgecc_wrap32("
        f"diff * (int64_t(1) << {shift})), {m})) : 0;",
        "      total += edgecc_rdbpot(exps[c], 12);",
        "    }",
        "    uint32_t u = static_cast<uint32_t>(edgecc_wrap32(total));",
        "    int clz = u == 0 ? 32 : __builtin_clz(u);",
        "    int64_t shifted = edgecc_wrap32(static_cast<int64_t>((static_cast<uint64_t>(u) << clz)"
        " & 0xFFFFFFFFu) - (int64_t(1) << 31));",
        "    int64_t scale = edgecc_one_over_one_plus_x(shifted);",
        "    int e = 12 - clz + 31 - 8;",
        f"    for (int c = 0; c < {depth}; ++c) {{",
        "      int64_t diff = xr[c] - mx;",
        f"      int64_t v = diff >= {diff_min} ? "
        "edgecc_rdbpot(edgecc_srdhm(scale, exps[c]), e) - 128 : -128;",
        f"      y[r * {depth} + c] = static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v));",
        "    }",
        "  }",
        "}", ""])


def _lut_source(region: Region, op: Any, fname: str) -> str:
    """An element-wise activation as the NPU applies it: a 256-entry int8 table (the
    simulator's ``lut_table``, computed here at build time) indexed by x + 128."""
    from edgecc.targets.npu.simulator import lut_table

    xs, ys = region.tensors[op.inputs[0]], region.tensors[op.outputs[0]]
    size = int(np.prod(ys.shape))
    return "\n".join([f"// {op.kind} (table) -> {op.outputs[0]}",
                      _array("int8_t", f"{fname}_lut", lut_table(op, xs, ys)),
                      f"static void {fname}(const int8_t* x, int8_t* y) {{",
                      f"  for (int i = 0; i < {size}; ++i) y[i] = {fname}_lut[x[i] + 128];",
                      "}", ""])


_DATA_OPS = {"mean": _mean_source, "quantize": _quantize_source, "reshape": _reshape_source,
             "transpose": _transpose_source, "mul": _mul_source,
             "max_pool2d": _pool_source, "avg_pool2d": _pool_source,
             "strided_slice": _strided_slice_source, "concat": _concat_source,
             "softmax": _softmax_source,
             **{k: _lut_source for k in LUT_KINDS}}


def module_source(regions: list[tuple[Region, str]]) -> str:
    """One C++ translation unit with every (region, symbol)'s function."""
    softmax = any(op.kind == "softmax" for r, _ in regions for op in r.ops)
    helpers = ("namespace {" + _SOFTMAX_HELPERS + "}  // namespace\n") if softmax else ""
    return PRELUDE + helpers + "\n".join(region_source(r, sym) for r, sym in regions)
