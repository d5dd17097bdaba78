"""Partitioning through TVM Relax BYOC: the NPU's patterns come from its description.

The program is imported into Relax with edgecc's quantize / dequantize as Relax's own
``relax.quantize`` / ``relax.dequantize`` (``import_qdq``), so a quantized layer reads::

    lv1 = R.dequantize(x_q, s_x, z_x)                      # x_q: int8, from the CPU or NPU
    lv2 = R.nn.conv2d(lv1, R.dequantize(W_int8, s_w, 0))   # weights: int8 constants
    lv3 = R.clip(R.add(lv2, bias), 0, 6)                   # bias, fused activation
    y_q = R.quantize(lv3, s_y, z_y)                        # int8 out

Then, as TVM's BYOC flow prescribes:

1. ``CanonicalizeBindings``: weights and scales become constants inside each region;
2. ``FuseOpsByPattern(patterns, annotate_codegen=...)``: one ``tvm.relax.dpl`` pattern per
   pattern of the description (conv2d / depthwise_conv2d / fully_connected [+ bias]
   [+ the activations its ``fuse`` lists] between a dequantize and a quantize; int8 add
   [+ relu]; int8 mul; batch matmul of two int8 activations (attention, after
   ``npu-decompose-attention``); max / average pool [+ flatten] [+ requantize]; table
   activations (sigmoid, tanh, hardswish, leaky_relu, gelu); softmax over the last axis;
   concat of 2-4 inputs; strided slice; one builder per family of ``ops.OPS``); each match
   is checked against the description's constraints
   (``OpSpec.check``) by the pattern's check function, which records why it declines;
3. ``MergeCompositeFunctions`` (Ethos-U with ``merge_regions``: connected NPU layers become
   one region, as Vela cascades them) — otherwise each composite is wrapped alone
   (``annotate_codegen=True``);
4. ``RunCodegen``: ``relax.ext.edgecc_npu_c`` / ``relax.ext.edgecc_npu_vela``, registered
   here from Python, turns each function with a ``Codegen`` attribute into a ``Region``
   (``relax_region``) and then into C source (``runtime.CSourceModuleCreate``, compiled into
   the library) or a Vela-compiled region (run here by the integer simulator); the call
   sites become ``call_dps_packed(<global_symbol>, ...)``.

Everything the patterns did not take stays in the Relax module and is built for the CPU.
Region tensors are NHWC (TFLite); at the region boundary 4-D tensors are NCHW (the Relax
graph's layout) and others are flattened rows, converted inside the region's function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from edgecc.targets.npu.description import NpuDescription
from edgecc.targets.npu.ops import BY_NAME, ROOTS, NpuOp
from edgecc.targets.npu.partition import npu_softmax
from edgecc.targets.npu.region import Region, RegionBuilder, same_padding

NCHW_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}  # a 4-D boundary tensor's axis in the region
ACTIVATIONS = {"relu": "RELU", "relu6": "RELU6"}


def codegen_name(desc: NpuDescription) -> str:
    """The BYOC codegen name (``relax.ext.<name>``) of a description's codegen."""
    return f"edgecc_npu_{desc.codegen}"


# -- import ------------------------------------------------------------------------------

def qdq_converters(constants: dict[str, np.ndarray]) -> dict[str, Any]:
    """edgecc's converters with int8 quantize / dequantize (constant scale and zero point,
    per tensor or per channel) as ``relax.quantize`` / ``relax.dequantize``: the form the
    patterns match and TVM's legalization computes (round half to even, saturate) on the
    CPU."""
    from tvm import relax

    from edgecc.targets.tvm.converters import CUSTOM_CONVERTERS

    base = CUSTOM_CONVERTERS

    def make(name: str) -> Callable[[Any, Any], Any]:
        quantize = name.startswith("quantize")

        def convert(node: Any, importer: Any) -> Any:
            dtype, block = (node.args[7] if quantize else node.args[5]), node.args[4]
            env = importer.env
            bb = importer.block_builder
            sv, zv = (constants.get(getattr(a, "name", None)) for a in node.args[1:3])
            if (dtype != "int8" or block or sv is None or zv is None
                    or (quantize and (node.args[5], node.args[6]) != (-128, 127))):
                return base[name](node, importer)
            x, axis = env[node.args[0]], int(node.args[3])
            sv, zv = np.asarray(sv, np.float32), np.asarray(zv).astype(np.int8)
            if sv.size == 1:
                sv, zv, axis = sv.reshape(()), zv.reshape(()), 0
            s, z = relax.const(sv), relax.const(zv)
            if quantize:
                return bb.emit(relax.op.quantize(x, s, z, axis, "int8"))
            out = str(node.args[6]).replace("torch.", "")
            return bb.emit(relax.op.dequantize(x, s, z, axis, out))

        return convert

    return {**base, "quantize.default": make("quantize.default"),
            "dequantize.default": make("dequantize.default")}


# -- patterns ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NpuPattern:
    """One description pattern as a ``tvm.relax.dpl`` pattern."""

    name: str  # <codegen>.<description pattern name>
    root: str  # an op of ops.OPS (conv2d, add, sigmoid, ...)
    fuse: tuple[str, ...]  # activations it fuses
    pattern: Any
    annotations: dict[str, Any]


def _dq(x: Any) -> Any:
    from tvm.relax.dpl import is_const, is_op

    return is_op("relax.dequantize")(x, is_const(), is_const())


def _quantized(value: Any, ann: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from tvm.relax.dpl import is_const, is_op

    ann["q"] = is_op("relax.quantize")(value, is_const(), is_const())
    return ann["q"], ann


def _with_activations(body: Any, fuse: tuple[str, ...], ann: dict[str, Any]) -> Any:
    """``body`` or ``body`` followed by one of the fused activations (relu, relu6 = clip)."""
    from tvm.relax.dpl import is_op, wildcard

    value = body
    if "relu" in fuse:
        ann["relu"] = is_op("relax.nn.relu")(body)
        value = value | ann["relu"]
    if "relu6" in fuse:
        ann["clip"] = is_op("relax.clip")(body, wildcard(), wildcard())
        value = value | ann["clip"]
    return value


def _layer_pattern(op: NpuOp, fuse: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """dq(x) -> conv2d / matmul(x, permute_dims(W)) of a constant dq(W) [+ bias] [+ act]."""
    from tvm.relax.dpl import is_const, is_op, wildcard

    ann: dict[str, Any] = {"x_dq": _dq(wildcard()), "w_dq": _dq(is_const())}
    if op.name == "fully_connected":
        ann["wt"] = is_op("relax.permute_dims")(ann["w_dq"])
        ann["op"] = is_op(op.relax[0])(ann["x_dq"], ann["wt"])
    else:
        ann["op"] = is_op(op.relax[0])(ann["x_dq"], ann["w_dq"])
    # the importer adds a conv's bias reshaped to (1, C, 1, 1)
    bias = is_const() | is_op("relax.reshape")(is_const(), wildcard())
    ann["bias"] = is_op("relax.add")(ann["op"], bias)
    return _quantized(_with_activations(ann["op"] | ann["bias"], fuse, ann), ann)


def _binary_pattern(op: NpuOp, fuse: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """Two int8 activations: add [+ act], mul, matmul (attention, no bias)."""
    from tvm.relax.dpl import is_op, wildcard

    ann: dict[str, Any] = {"x_dq": _dq(wildcard()), "b_dq": _dq(wildcard())}
    ann["op"] = is_op(op.relax[0])(ann["x_dq"], ann["b_dq"])
    return _quantized(_with_activations(ann["op"], fuse, ann), ann)


def _pool_pattern(op: NpuOp, fuse: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """An int8 pool / mean, optionally flattened, then requantized."""
    from tvm.relax.dpl import is_op, wildcard

    ann: dict[str, Any] = {"x_dq": _dq(wildcard())}
    ann["op"] = is_op(op.relax[0])(ann["x_dq"])
    ann["flat"] = is_op("relax.reshape")(ann["op"], wildcard())
    return _quantized(ann["op"] | ann["flat"], ann)


def _unary_pattern(op: NpuOp, fuse: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """int8 -> one op of the row's Relax ops (any further arguments) -> int8: table
    activations, softmax, strided slice; hardswish as TVM imports it, multiply(x,
    divide(clip(add(x, 3), 0, 6), 6)), where x's dequantize may be copied per reader
    (lower._dequantize_per_reader)."""
    from tvm.relax.dpl import is_const, is_op, wildcard

    ann: dict[str, Any] = {"x_dq": _dq(wildcard())}
    if op.name == "hardswish":
        ann["x_dq2"] = _dq(wildcard())
        inner = is_op("relax.clip")(is_op("relax.add")(ann["x_dq2"], is_const()),
                                    wildcard(), wildcard())
        ann["op"] = is_op("relax.multiply")(ann["x_dq"], is_op("relax.divide")(inner,
                                                                              is_const()))
    else:
        alternatives = [is_op(r)(ann["x_dq"], varg_default_wildcard=True) for r in op.relax]
        ann["op"] = alternatives[0]
        for a in alternatives[1:]:
            ann["op"] = ann["op"] | a
    return _quantized(ann["op"], ann)


def _concat_pattern(op: NpuOp, fuse: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """concat of a tuple of 2 to 4 int8 activations."""
    from tvm.relax.dpl import is_op, is_tuple, wildcard

    tuples = [is_tuple([_dq(wildcard()) for _ in range(n)]) for n in (2, 3, 4)]
    ann: dict[str, Any] = {"tuple": tuples[0] | tuples[1] | tuples[2]}
    ann["op"] = is_op(op.relax[0])(ann["tuple"])
    return _quantized(ann["op"], ann)


_PATTERNS = {"layer": _layer_pattern, "binary": _binary_pattern, "pool": _pool_pattern,
             "table": _unary_pattern, "softmax": _unary_pattern, "slice": _unary_pattern,
             "concat": _concat_pattern}
# the roots whose pattern carries the description's fused activations
FUSING = ("conv2d", "depthwise_conv2d", "fully_connected", "add")


def _dpl_pattern(root: str, fuse: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    op = BY_NAME[root]
    return _PATTERNS[op.family](op, fuse if root in FUSING else ())


def patterns(desc: NpuDescription) -> list[NpuPattern]:
    """The description's patterns (``patterns:``) edgecc lowers, in priority order
    (depthwise before conv2d: both match ``relax.nn.conv2d``); an op of ``ops:`` no pattern
    names as its root is offloaded alone (with its bias, without a fused activation)."""
    prefix = codegen_name(desc)
    listed = [(p.name, p.root, tuple(p.fuse)) for p in desc.patterns]
    roots = {root for _, root, _ in listed}
    listed += [(r, r, ()) for r in ROOTS if r not in roots]
    out = []
    for name, root, fuse in sorted(listed, key=lambda p: ROOTS.index(p[1])
                                   if p[1] in ROOTS else 99):
        if root not in ROOTS or desc.op(root) is None:
            continue
        if root == "softmax" and npu_softmax(desc):
            continue
        fuse = tuple(a for a in fuse if a in ACTIVATIONS and desc.op(a) is not None)
        pat, ann = _dpl_pattern(root, fuse)
        out.append(NpuPattern(f"{prefix}.{name}", root, fuse, pat, ann))
    return out


# -- a match as a region layer -----------------------------------------------------------

def _const(expr: Any) -> np.ndarray:
    return expr.value.numpy()


def _shape(expr: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


@dataclasses.dataclass
class Layer:
    """A matched composite as one region op: its external inputs (the Relax expressions
    of the int8 values it reads) with their region shapes and quantization, and how it is
    added to a ``RegionBuilder``."""

    kind: str
    inputs: list[Any]
    input_specs: list[tuple[tuple[int, ...], float, int]]
    emit: Callable[[RegionBuilder, list[str], str], str]
    macs: int


def region_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The region (NHWC / rows) shape of a Relax tensor at the boundary."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    return shape


def _scalar_q(dq_or_q: Any) -> tuple[float, int] | None:
    s, z = _const(dq_or_q.args[1]), _const(dq_or_q.args[2])
    if s.size != 1 or z.size != 1:
        return None
    return float(s.reshape(-1)[0]), int(z.reshape(-1)[0])


def _activation(parts: dict[str, Any]) -> tuple[str | None, str]:
    if "relu" in parts:
        return "RELU", ""
    if "clip" in parts:
        c = parts["clip"]
        lo, hi = (float(getattr(c.args[i].value, "value", c.args[i].value)) for i in (1, 2))
        if (lo, hi) == (0.0, 6.0):
            return "RELU6", ""
        return None, f"clip to [{lo:g}, {hi:g}] is not a fused activation the NPU applies"
    return "NONE", ""


def layer_from_match(root: str, parts: dict[str, Any], desc: NpuDescription,
                     var2val: Any = None) -> tuple[Layer | None, str]:
    """The region op of a match, or (None, the constraint that refuses it); ``var2val``
    resolves the bound variables among the matched expressions' arguments."""
    import tvm

    def value(expr):
        while isinstance(expr, tvm.relax.Var) and var2val is not None and expr in var2val:
            expr = var2val[expr]
        return expr

    if root == "concat":  # its inputs are the tuple's fields
        fields = [value(f) for f in value(parts["tuple"]).fields]
        parts = {**parts, "x_dq": fields[0], "fields": fields}
    xq = _scalar_q(parts["x_dq"])
    yq = _scalar_q(parts["q"])
    if xq is None or yq is None:
        return None, "activations are quantized per axis; the NPU takes int8 per tensor"
    if parts["q"].attrs.out_dtype != "int8":
        return None, "its output is not int8"
    zps = [xq[1], yq[1]] + ([_scalar_q(parts["b_dq"])[1]] if "b_dq" in parts and
                            _scalar_q(parts["b_dq"]) else [])
    if desc.quantization.activation_zero_point == "zero" and any(zps):
        return None, (f"activation zero points {zps}: the NPU takes symmetric activations "
                      "(quantization.activations.zero_point: zero)")
    act, why = _activation(parts)
    if act is None:
        return None, why
    op = BY_NAME[root]
    return _LAYERS[op.family](op, parts, desc, xq, yq, act, value)


def _weighted_layer(op, parts, desc, xq, yq, act, value):
    """conv2d / depthwise_conv2d / fully_connected with constant int8 weights and bias."""
    import tvm

    root = op.name
    wq = _const(parts["w_dq"].args[0])
    sw = _const(parts["w_dq"].args[1]).astype(np.float32).reshape(-1)
    zw = _const(parts["w_dq"].args[2])
    if wq.dtype != np.int8:
        return None, f"weights are {wq.dtype}, the NPU takes int8"
    if np.any(zw != 0):
        return None, "weights are asymmetric; the NPU takes symmetric weights"
    oc = wq.shape[0]
    if sw.size not in (1, oc) or (sw.size > 1 and int(parts["w_dq"].attrs.axis) != 0):
        return None, "weights are not quantized per tensor or per output channel"
    sw = np.broadcast_to(sw, (oc,)).astype(np.float32)
    bias = np.zeros(oc, np.int32)
    if "bias" in parts:
        b = value(parts["bias"].args[1])
        b = _const(b if isinstance(b, tvm.ir.Constant) else b.args[0]).astype(np.float64)
        if b.size != oc:
            return None, f"bias of {b.size} values for {oc} channels"
        q = np.round(b.reshape(-1) / (np.float32(xq[0]) * sw).astype(np.float64))
        if np.any(np.abs(q) >= 2**31):
            return None, "its bias does not fit int32 at scale s_x * s_w"
        bias = q.astype(np.int32)
    wsum = int(np.abs(wq.astype(np.int64)).reshape(oc, -1).sum(axis=1).max())
    bmax = int(np.abs(bias.astype(np.int64)).max()) if bias.size else 0
    out_shape = _shape(parts["op"])
    if root == "fully_connected":
        return _fc_layer(parts, desc, xq, yq, act, wq, sw, bias, wsum, bmax, out_shape)
    return _conv_layer(root, parts, desc, xq, yq, act, wq, sw, bias, wsum, bmax, out_shape)


def _conv_layer(root, parts, desc, xq, yq, act, wq, sw, bias, wsum, bmax, out_shape):
    attrs = parts["op"].attrs
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        return None, f"conv2d layout {attrs.data_layout}/{attrs.kernel_layout} (NCHW/OIHW)"
    n, c, h, w = _shape(parts["x_dq"])
    oc, cg, kh, kw = wq.shape
    groups = int(attrs.groups)
    if root == "conv2d" and groups != 1:
        return None, "-"  # a depthwise convolution: not this pattern's (no reason recorded)
    multiplier = None
    if root == "depthwise_conv2d":
        if groups == 1:
            return None, "-"
        if not (cg == 1 and groups == c and oc % c == 0):
            return None, f"grouped convolution ({groups} groups) is neither conv2d nor depthwise"
        multiplier = oc // c
    spec = desc.op(root)
    stride = tuple(int(s) for s in attrs.strides)
    dilation = tuple(int(d) for d in attrs.dilation)
    pt, pl, pb, pr = (int(p) for p in attrs.padding)
    same = [same_padding(h, kh, stride[0], dilation[0]), same_padding(w, kw, stride[1],
                                                                      dilation[1])]
    if (pt, pl, pb, pr) == (0, 0, 0, 0):
        padding = "VALID"
    elif (pt, pb) == same[0] and (pl, pr) == same[1]:
        padding = "SAME"
    else:
        padding = None  # explicit padding: a PAD op in the region, then VALID
    if padding is None and (desc.op("pad") is None and desc.codegen == "vela"):
        return None, ("explicit padding TFLite's SAME does not express, and the NPU has no "
                      "pad op (ops.pad)")
    yn, yc, yh, yw = out_shape
    why = spec.check(dtype="int8", shapes=[(n, h, w, c), (yn, yh, yw, yc)], kernel=(kh, kw),
                     stride=stride, dilation=dilation, padding=padding or "VALID",
                     pads=(pt, pl, pb, pr), groups=1 if root == "conv2d" else None,
                     depth_multiplier=multiplier, channels=(c, oc), weight_abs_sum=wsum)
    why = why or spec.check(bias_max_abs=bmax)
    if why:
        return None, why

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        x = names[0] if padding else b.pad(names[0], (pt, pl, pb, pr))
        common = dict(out_scale=yq[0], out_zero_point=yq[1], stride=stride,
                      padding=padding or "VALID", dilation=dilation, activation=act, name=out)
        if root == "conv2d":
            return b.conv2d(x, wq.transpose(0, 2, 3, 1), bias, sw, **common)
        return b.depthwise_conv2d(x, wq.transpose(1, 2, 3, 0), bias, sw,
                                  depth_multiplier=multiplier, **common)

    macs = int(np.prod(out_shape)) * cg * kh * kw
    return Layer(root, [parts["x_dq"].args[0]], [((n, h, w, c), xq[0], xq[1])], emit,
                 macs), ""


def _fc_layer(parts, desc, xq, yq, act, wq, sw, bias, wsum, bmax, out_shape):
    xshape = _shape(parts["x_dq"])
    if len(xshape) > 3:
        return None, f"fully connected on a {len(xshape)}-D input (the NPU takes rows)"
    k, oc = xshape[-1], wq.shape[0]
    rows = int(np.prod(xshape[:-1]))
    spec = desc.op("fully_connected")
    why = spec.check(dtype="int8", shapes=[(rows, k), (rows, oc)], reduced_axis=k,
                     weight_abs_sum=wsum) or spec.check(bias_max_abs=bmax)
    if why:
        return None, why

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        return b.fully_connected(names[0], wq, bias, sw, out_scale=yq[0],
                                 out_zero_point=yq[1], activation=act, name=out)

    return Layer("fully_connected", [parts["x_dq"].args[0]], [((rows, k), xq[0], xq[1])],
                 emit, rows * k * oc), ""


def _binary_layer(op, parts, desc, xq, yq, act, value):
    """Two int8 activations: ADD [+ relu] / MUL of equal shapes (no broadcast), or
    BATCH_MATMUL (B, M, K) x (B, K, N) (attention's products)."""
    import tvm

    if op.name == "matmul" and any(isinstance(parts[k].args[0], tvm.ir.Constant)
                                   for k in ("x_dq", "b_dq")):
        return None, "-"  # a constant operand: a linear layer's form, not this pattern's
    bq = _scalar_q(parts["b_dq"])
    if bq is None:
        return None, "activations are quantized per axis; the NPU takes int8 per tensor"
    sa, sb = _shape(parts["x_dq"]), _shape(parts["b_dq"])
    macs = 0
    if op.name == "matmul":
        if len(sa) != 3 or len(sb) != 3 or sa[0] != sb[0] or sa[2] != sb[1]:
            return None, (f"matmul of shapes {list(sa)} x {list(sb)}; the NPU's batch matmul "
                          "takes (B, M, K) x (B, K, N)")
        yshape = (sa[0], sa[1], sb[2])
        why = desc.op("matmul").check(dtype="int8", shapes=[sa, sb, yshape],
                                      reduced_axis=sa[2])
        shapes, macs = [sa, sb], yshape[0] * yshape[1] * yshape[2] * sa[2]
    else:
        if sa != sb or not sa:
            return None, (f"{op.name} of shapes {list(sa)} and {list(sb)} (broadcast) stays on "
                          "the CPU")
        shape = region_shape(sa)
        why = desc.op(op.name).check(dtype="int8", shapes=[shape, shape])
        shapes = [shape, shape]
    if why:
        return None, why

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        if op.name == "matmul":
            return b.batch_matmul(names[0], names[1], yq[0], yq[1], name=out)
        return getattr(b, op.name)(names[0], names[1], yq[0], yq[1], activation=act, name=out)

    return Layer(op.kind, [parts["x_dq"].args[0], parts["b_dq"].args[0]],
                 [(shapes[0], xq[0], xq[1]), (shapes[1], bq[0], bq[1])], emit, macs), ""


def _mean_layer(op, parts, desc, xq, yq, act=None, value=None):
    """A mean over H and W (global average pooling) as TFLite MEAN: the sum requantized to
    the output once; a flatten after it is free (H = W = 1)."""
    xshape = _shape(parts["x_dq"])
    if len(xshape) != 4:
        return None, f"mean of a {len(xshape)}-D tensor (the NPU's MEAN here is over H and W)"
    n, c, h, w = xshape
    a = parts["op"].attrs
    axes = sorted(int(x) % 4 for x in a.axis)
    if axes != [2, 3]:
        return None, f"mean over axes {axes}; the NPU's MEAN here is over H and W"
    why = desc.op("mean").check(dtype="int8", shapes=[(n, h, w, c)], reduced_axis=h * w)
    if why:
        return None, why
    out = _shape(parts["flat"]) if "flat" in parts else _shape(parts["op"])
    if len(out) not in (2, 4):
        return None, f"a reshape to {list(out)} after the mean"

    def emit(b: RegionBuilder, names: list[str], name: str) -> str:
        y = b.mean(names[0], yq[0], yq[1], keep_dims=len(out) == 4,
                   name=name if len(out) != 2 or out == (n, c) else None)
        return y if len(out) != 2 or out == (n, c) else b.reshape(y, out, name=name)

    return Layer("mean", [parts["x_dq"].args[0]], [((n, h, w, c), xq[0], xq[1])], emit, 0), ""


def _pool_layer(op, parts, desc, xq, yq, act=None, value=None):
    """A max / average pool on the int8 input with its quantization (TFLite's int8 pools
    keep it), then the flatten and the requantize to the output's parameters where the
    graph has them; a mean over H and W (``_mean_layer``)."""
    if op.name == "mean":
        return _mean_layer(op, parts, desc, xq, yq)
    root = op.name
    xshape = _shape(parts["x_dq"])
    if len(xshape) != 4:
        return None, f"{root} of a {len(xshape)}-D tensor (the NPU pools NHWC maps)"
    n, c, h, w = xshape
    a = parts["op"].attrs
    if str(a.layout) != "NCHW" or bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation):
        return None, f"{root} with layout {a.layout}, ceil_mode or dilation"
    kernel = tuple(int(k) for k in a.pool_size)
    stride = tuple(int(k) for k in a.strides)
    pads = tuple(int(p) for p in a.padding)
    if pads == (0, 0, 0, 0):
        padding = "VALID"
    elif ((pads[0], pads[2]) == same_padding(h, kernel[0], stride[0], 1)
          and (pads[1], pads[3]) == same_padding(w, kernel[1], stride[1], 1)
          and not (root == "avg_pool2d" and bool(a.count_include_pad))):
        padding = "SAME"
    else:
        return None, f"pool padding {list(pads)} that TFLite's SAME / VALID do not express"
    why = desc.op(root).check(dtype="int8", shapes=[(n, h, w, c)], kernel=kernel,
                              stride=stride, padding=padding)
    if why:
        return None, why
    flat = _shape(parts["flat"]) if "flat" in parts else None
    if flat is not None and len(flat) != 2:
        return None, f"a reshape to {list(flat)} after the pool (the NPU region flattens only)"

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        y = getattr(b, root)(names[0], kernel, stride, padding=padding)
        if flat is not None:
            if b._tensors[y].shape[1:3] != (1, 1):
                y = b.transpose(y, (0, 3, 1, 2))  # NCHW element order, as PyTorch flattens
            y = b.reshape(y, flat)
        if (xq[0], xq[1]) == (yq[0], yq[1]):
            return b.reshape(y, b._tensors[y].shape, name=out)  # names the output
        return b.quantize(y, yq[0], yq[1], name=out)

    return Layer(root, [parts["x_dq"].args[0]], [((n, h, w, c), xq[0], xq[1])], emit, 0), ""


def _requantized(b: RegionBuilder, name: str, q: tuple[float, int], yq: tuple[float, int],
                 out: str | None = None) -> str:
    """``name`` at quantization ``yq``: itself, or a QUANTIZE (named ``out`` when given)."""
    if (float(np.float32(q[0])), q[1]) == (float(np.float32(yq[0])), yq[1]):
        return name if out is None else b.reshape(name, b._tensors[name].shape, name=out)
    return b.quantize(name, yq[0], yq[1], name=out)


def _concat_layer(op, parts, desc, xq, yq, act=None, value=None):
    """TFLite int8 CONCATENATION (inputs share the output's quantization: each input whose
    quantization differs is requantized first, as LiteRT requires)."""
    fields = parts["fields"]
    qs = [_scalar_q(f) for f in fields]
    if any(q is None for q in qs):
        return None, "activations are quantized per axis; the NPU takes int8 per tensor"
    zps = [q[1] for q in qs] + [yq[1]]
    if desc.quantization.activation_zero_point == "zero" and any(zps):
        return None, (f"activation zero points {zps}: the NPU takes symmetric activations "
                      "(quantization.activations.zero_point: zero)")
    shapes = [_shape(f) for f in fields]
    rank = len(shapes[0])
    if not 1 <= rank <= 4:
        return None, f"concat of {rank}-D tensors"
    axis = int(parts["op"].attrs.axis) % rank
    region_axis = NCHW_TO_NHWC_AXIS[axis] if rank == 4 else axis
    rshapes = [region_shape(sh) for sh in shapes]
    why = desc.op("concat").check(dtype="int8", shapes=rshapes)
    if why:
        return None, why

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        ins = [_requantized(b, n, q, yq) for n, q in zip(names, qs)]
        return b.concat(ins, region_axis, name=out)

    return Layer("concat", [f.args[0] for f in fields],
                 [(sh, q[0], q[1]) for sh, q in zip(rshapes, qs)], emit, 0), ""


def _ints(expr: Any, value: Callable[[Any], Any]) -> list[int]:
    expr = value(expr)
    items = expr.fields if hasattr(expr, "fields") else expr
    return [int(getattr(value(v), "value", v)) for v in items]


def _strided_slice_layer(op, parts, desc, xq, yq, act, value):
    """TFLite int8 STRIDED_SLICE with constant, positive begin / end / strides (no masks),
    then a requantize where the output's quantization differs (Vela: strides > 1 only over
    H or W)."""
    op = parts["op"]
    shape = _shape(parts["x_dq"])
    if len(op.args) < 4 or not 1 <= len(shape) <= 4:
        return None, f"strided slice of a {len(shape)}-D tensor"
    axes, begin, end = (_ints(op.args[i], value) for i in (1, 2, 3))
    strides = _ints(op.args[4], value) if len(op.args) > 4 else [1] * len(axes)
    rank = len(shape)
    full_b, full_e, full_s = [0] * rank, list(shape), [1] * rank
    for a, b_, e_, s_ in zip(axes, begin, end, strides):
        a %= rank
        if s_ <= 0:
            return None, f"strided slice with stride {s_} (the NPU takes positive strides)"
        n = shape[a]
        b_ = min(max(b_ + n if b_ < 0 else b_, 0), n)
        e_ = min(max(e_ + n if e_ < 0 else e_, 0), n)
        if e_ <= b_:
            return None, "an empty strided slice"
        full_b[a], full_e[a], full_s[a] = b_, e_, s_
    if rank == 4:  # NCHW at the boundary, NHWC in the region
        perm = (0, 2, 3, 1)
        full_b, full_e, full_s = ([v[p] for p in perm] for v in (full_b, full_e, full_s))
        if any(full_s[i] != 1 for i in (0, 3)):
            return None, ("strided slice with a stride over N or C (Vela: \"Stride must be "
                          "non-negative (and over W or H)\")")
    elif any(st != 1 for st in full_s):
        return None, "strided slice with a stride on a tensor that is not 4-D NCHW"
    rshape = region_shape(shape)
    why = desc.op("strided_slice").check(dtype="int8", shapes=[rshape])
    if why:
        return None, why

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        y = b.strided_slice(names[0], full_b, full_e, full_s)
        return _requantized(b, y, xq, yq, out)

    return Layer("strided_slice", [parts["x_dq"].args[0]], [(rshape, xq[0], xq[1])], emit,
                 0), ""


def _softmax_layer(op, parts, desc, xq, yq, act=None, value=None):
    """TFLite int8 SOFTMAX over the last axis of a tensor of rank <= 3 (attention's
    (B*H, S, Sk) logits), then a requantize where the graph's output quantization is not
    TFLite's (1/256, -128)."""
    shape = _shape(parts["x_dq"])
    axis = int(parts["op"].attrs.axis)
    if not 1 <= len(shape) <= 3 or axis % len(shape) != len(shape) - 1:
        return None, (f"softmax over axis {axis} of a {len(shape)}-D tensor (the NPU's is over "
                      "the last axis of <= 3-D)")
    why = desc.op("softmax").check(dtype="int8", shapes=[(1,) * (4 - len(shape)) + shape])
    if why:
        return None, why
    same = (float(np.float32(yq[0])), yq[1]) == (float(np.float32(1 / 256)), -128)

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        y = b.softmax(names[0], name=out if same else None)
        return y if same else b.quantize(y, yq[0], yq[1], name=out)

    return Layer("softmax", [parts["x_dq"].args[0]], [(shape, xq[0], xq[1])], emit, 0), ""


def _table_layer(op, parts, desc, xq, yq, act, value):
    """An element-wise activation between int8 values: one table op (LOGISTIC / TANH at
    their TFLite output quantization, then a requantize to the graph's)."""
    from edgecc.targets.npu.region import FIXED_OUTPUT_QUANT

    shape = region_shape(_shape(parts["x_dq"]))
    root, kind = op.name, op.kind
    call = parts["op"]
    extra: dict[str, Any] = {}
    if root == "hardswish":
        a, b = parts["x_dq"], parts["x_dq2"]
        if not (value(a.args[0]).same_as(value(b.args[0])) and _scalar_q(a) == _scalar_q(b)):
            return None, "x * clip(y + 3, 0, 6) / 6 of two different values is not hardswish"
        div = value(call.args[1])
        clip = value(div.args[0])
        three = _const(value(clip.args[0]).args[1]).reshape(-1)
        six = _const(div.args[1]).reshape(-1)
        lo, hi = (float(getattr(clip.args[i].value, "value", clip.args[i].value))
                  for i in (1, 2))
        if (three.tolist(), six.tolist(), lo, hi) != ([3.0], [6.0], 0.0, 6.0):
            return None, "x * clip(x + a, lo, hi) / d that is not hardswish"
    elif root == "leaky_relu":
        extra["alpha"] = float(call.attrs.alpha)
        if extra["alpha"] < 0:
            return None, f"leaky_relu slope {extra['alpha']:g} < 0 is not lowered to the NPU"
    elif root == "gelu":
        extra["approximate"] = call.op.name == "relax.nn.gelu_tanh"
    why = desc.op(root).check(dtype="int8", shapes=[shape, shape])
    if why:
        return None, why
    fixed = FIXED_OUTPUT_QUANT.get(kind)

    def emit(b: RegionBuilder, names: list[str], out: str) -> str:
        if fixed is None:
            return b.lut(names[0], kind, yq[0], yq[1], name=out, **extra)
        same = (float(np.float32(yq[0])), yq[1]) == (float(np.float32(fixed[0])), fixed[1])
        y = b.lut(names[0], kind, name=out if same else None)
        return y if same else b.quantize(y, yq[0], yq[1], name=out)

    return Layer(kind, [parts["x_dq"].args[0]], [(shape, xq[0], xq[1])], emit, 0), ""


_LAYERS = {"layer": _weighted_layer, "binary": _binary_layer, "pool": _pool_layer,
           "table": _table_layer, "softmax": _softmax_layer, "concat": _concat_layer,
           "slice": _strided_slice_layer}


# -- check functions ---------------------------------------------------------------------

@dataclasses.dataclass
class Declined:
    pattern: str
    op: str
    shape: list[int]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_function(p: NpuPattern, desc: NpuDescription, declined: list[Declined]
                   ) -> Callable[[Any], bool]:
    """The pattern's check: the match fits the description's constraints, else the reason
    is appended to ``declined`` and the match is refused (the layer stays on the CPU)."""

    def check(ctx: Any) -> bool:
        parts = {k: v for k, v in ctx.annotated_expr.items()}
        try:
            layer, why = layer_from_match(p.root, parts, desc, ctx.matched_bindings)
            if layer is not None:
                why = _escapes(ctx)
                layer = None if why else layer
        except Exception as exc:  # noqa: BLE001 - an unexpected form is declined, with why
            layer, why = None, f"not lowered ({type(exc).__name__}: {exc})"
        if layer is None and why != "-":
            declined.append(Declined(p.name, p.root, list(_shape(parts["op"])), why))
        return layer is not None

    return check


def _escapes(ctx: Any) -> str:
    """Why the match cannot be one NPU op: a value inside it (a dequantized input, the
    float result before the quantize) is also read outside it ("" when none is)."""
    inside = set(ctx.matched_bindings.keys())
    root = ctx.value_to_bound_var.get(ctx.matched_expr) if ctx.value_to_bound_var else None
    for var in inside:
        if var.same_as(root) if root is not None else False:
            continue
        users = ctx.var_usages.get(var, [])
        if any(u not in inside for u in users):
            return (f"{var.name} ({ctx.matched_bindings[var].op.name}) inside the layer is "
                    "also read outside it")
    return ""


# -- from a codegen function to a region -------------------------------------------------

def _composite_parts(fn: Any, by_name: dict[str, NpuPattern]) -> tuple[NpuPattern, dict, Any]:
    from tvm import relax

    p = by_name[str(fn.attrs["Composite"])]
    var2val = relax.analysis.get_var2val(fn)
    body = fn.body
    result = body.body if isinstance(body, relax.SeqExpr) else body
    matched = p.pattern.extract_matched_expr(result, var2val)
    if matched is None:
        raise ValueError(f"composite {p.name} does not match its own pattern")
    parts = {k: matched[pat] for k, pat in p.annotations.items() if pat in matched}
    return p, parts, var2val


def function_region(fn: Any, name: str, desc: NpuDescription,
                    by_name: dict[str, NpuPattern]) -> tuple[Region, list[tuple[int, ...]],
                                                             list[tuple[int, ...]]]:
    """The ``Region`` a function with a ``Codegen`` attribute computes, with the Relax
    shapes of its inputs and outputs (the layout at its boundary)."""
    from tvm import relax

    b = RegionBuilder(name)
    names: dict[Any, str] = {}  # outer Var -> region tensor name
    params = list(fn.params)
    readers: dict[Any, tuple] = {}
    bindings = [bd for block in fn.body.blocks for bd in block.bindings]
    locals_ = {bd.var: bd.value for bd in bindings if isinstance(bd.value, relax.Function)}
    plan = []
    for bd in bindings:
        value = bd.value
        if not isinstance(value, relax.Call):
            continue
        comp = locals_.get(value.op, value.op)
        if not isinstance(comp, relax.Function) or "Composite" not in (comp.attrs or {}):
            raise ValueError(f"{name}: unexpected binding in a codegen function: {value.op}")
        p, parts, var2val = _composite_parts(comp, by_name)
        layer, why = layer_from_match(p.root, parts, desc, var2val)
        if layer is None:
            raise ValueError(f"{name}: composite {p.name} no longer fits: {why}")
        inner_to_outer = dict(zip(comp.params, value.args))
        outer = [inner_to_outer[v] for v in layer.inputs]
        for v, spec in zip(outer, layer.input_specs):
            readers.setdefault(v, spec)
        plan.append((bd.var, layer, outer))
    for i, v in enumerate(params):
        shape, s, z = readers[v]
        names[v] = b.input(f"in{i}", shape, s, z)
    for var, layer, outer in plan:
        names[var] = layer.emit(b, [names[v] for v in outer], f"t{len(names)}")
    result = fn.body.body
    outs = list(result.fields) if isinstance(result, relax.Tuple) else [result]
    region = b.build([names[o] for o in outs])
    return region, [_shape(v) for v in params], [_shape(o) for o in outs]


# -- the BYOC flow -----------------------------------------------------------------------

@dataclasses.dataclass
class Partitioned:
    """What ``partition`` produced: the module after ``RunCodegen`` (NPU functions replaced
    by ``call_dps_packed`` of their symbols), the module as partitioned (before codegen),
    the regions each codegen function became (with their Relax boundary shapes) and the
    matches the check functions declined."""

    module: Any
    partitioned: Any
    regions: list[Region]
    boundary: dict[str, dict[str, list[list[int]]]]
    composites: dict[str, list[str]]  # symbol -> the composite patterns inside
    declined: list[Declined]


def _codegen_functions(mod: Any) -> list[tuple[Any, Any]]:
    return [(gv, f) for gv, f in mod.functions.items()
            if f.attrs is not None and "Codegen" in f.attrs]


def _named(mod: Any, prefix: str) -> Any:
    """Give each codegen function a short global symbol that carries a digest of the
    function (constants included), so two bundles loaded in one process never share one."""
    from tvm_ffi.structural import structural_hash

    for i, (gv, f) in enumerate(sorted(_codegen_functions(mod), key=lambda g: g[0].name_hint)):
        digest = f"{structural_hash(f) & 0xFFFFFFFFFF:010x}"
        mod[gv] = f.with_attr("global_symbol", f"{prefix}_r{i}_{digest}")
    return mod


def partition(module: Any, desc: NpuDescription, merge: bool,
              build: Callable[[list[Region]], list[Any]]) -> Partitioned:
    """Run the BYOC flow of the module docstring on ``module`` (a Relax IRModule from
    ``qdq_converters``). ``build(regions)`` is the codegen proper: it returns the runtime
    modules holding the regions' symbols (C source), or none when the host runner provides
    them (Ethos-U regions run by the simulator)."""
    import tvm
    from tvm import relax

    name = codegen_name(desc)
    declined: list[Declined] = []
    pats = patterns(desc)
    by_name = {p.name: p for p in pats}
    fusion = [(p.name, p.pattern, p.annotations, check_function(p, desc, declined))
              for p in pats]
    mod = relax.transform.CanonicalizeBindings()(module)
    # unused bindings (a max pool's indices tuple) would count as readers outside a match
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    mod = relax.transform.FuseOpsByPattern(fusion, bind_constants=True,
                                           annotate_codegen=not merge)(mod)
    if merge:
        mod = relax.transform.MergeCompositeFunctions()(mod)
    mod = _named(mod, name)
    partitioned = mod
    regions: list[Region] = []
    boundary: dict[str, dict[str, list[list[int]]]] = {}
    composites: dict[str, list[str]] = {}

    def codegen(functions: Any, options: Any, constant_names: Any) -> list[Any]:
        for f in functions:
            symbol = str(f.attrs["global_symbol"])
            region, ins, outs = function_region(f, symbol, desc, by_name)
            regions.append(region)
            boundary[symbol] = {"boundary_inputs": [list(s) for s in ins],
                                "boundary_outputs": [list(s) for s in outs]}
            composites[symbol] = _composite_names(f)
        return list(build(regions[-len(functions):])) if functions else []

    tvm.register_global_func(f"relax.ext.{name}", codegen, override=True)
    mod = relax.transform.RunCodegen()(mod)
    return Partitioned(mod, partitioned, regions, boundary, composites, declined)


def _composite_names(fn: Any) -> list[str]:
    from tvm import relax

    out = []
    for block in fn.body.blocks:
        for bd in block.bindings:
            v = bd.value
            if isinstance(v, relax.Function) and v.attrs is not None and "Composite" in v.attrs:
                out.append(str(v.attrs["Composite"]))
    return out
