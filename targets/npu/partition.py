"""Which nodes go to the NPU, and why the others stay on the CPU: the deployability report.

This is the explanation layer, on the fx graph (``edgecc inspect -t npu`` before any
compression, and the per-op reasons in the manifest); the compiled artifact is split by TVM
Relax BYOC (``byoc.py``), from the same description, and the report says whether the two
agree. A quantized layer is the region edgecc's fake-quant program writes,

    dq(q_x) -> conv / depthwise conv / linear (+ bias, + relu / relu6) <- dq(w_q int8)
            -> quantize (int8 per tensor)

and ``add(dq(q_a), dq(q_b)) [-> relu] -> quantize`` (int8 ADD, relu fused),
``matmul(dq(q_a), dq(q_b)) -> quantize`` (int8 BATCH_MATMUL: attention after
``npu-decompose-attention``), ``pool(dq(q_x)) [-> flatten] -> quantize`` and
``mul(dq(q_a), dq(q_b)) -> quantize``; the
description's ``OpSpec.check`` decides whether that instance fits the NPU, and a refusal
carries the constraint that refused it (``ops.conv2d.kernel_height`` ...). Every other node
runs on the CPU (the TVM layer) with the reason recorded. Each accepted layer is an int8
``Region`` (TFLite semantics, NHWC); in the artifact, connected layers are merged into one
multi-op region by the BYOC flow (``MergeCompositeFunctions``, ``byoc.py``).

``classify(graph, constant, desc)`` reads a graph whose constants ``constant(node)`` returns
(get_attr nodes of a ``Program``, or the placeholders of its ``torch.export`` form);
``assume_quantized=True`` judges a float model as if it were quantized as the NPU needs
(``edgecc inspect -t npu`` before any compression).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch.fx as fx

from edgecc.quant import is_dequantize, is_quantize
from edgecc.targets.npu.description import NpuDescription
from edgecc.targets.npu.ops import BY_NAME, OPS, for_fx
from edgecc.targets.npu.region import Region, RegionBuilder, same_padding
from edgecc.targets.tvm.partition import LEGALIZATION as TVM_LEGALIZATION
from edgecc.targets.tvm.partition import supports

__all__ = ["Decision", "Layer", "classify", "classify_program", "legalization", "summarize", "supports"]

CONV_OPS = ("convolution", "conv_act")
LINEAR_OPS = ("linear", "linear_act")
ACTIVATIONS = {None: "NONE", "relu": "RELU", "relu6": "RELU6"}
QUANT_OPS = ("quantize", "dequantize", "fake_quantize")


def _base(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


@dataclasses.dataclass
class Layer:
    """A quantized conv / linear the NPU runs, with everything its region needs."""

    node: fx.Node
    kind: str  # conv2d | depthwise_conv2d | fully_connected
    x_q: fx.Node | None  # the quantize node whose int8 value is the region input
    out_q: fx.Node | None  # the quantize node the region's output replaces
    pads: tuple[int, int, int, int]  # explicit (top, left, bottom, right) from the graph
    padding: str  # SAME | VALID (what the region op says)
    cpu_pad: tuple[int, int, int, int]  # padding applied on the CPU before a VALID region
    region: Region | None = None
    more_inputs: tuple[fx.Node, ...] = ()  # further quantize nodes feeding the region (add)
    # (name, NHWC shape, scale, zero point) of each input, and how the op is added to a
    # region builder given its input tensor names and its output name (merged regions)
    input_specs: tuple[tuple[str, tuple[int, ...], float, int], ...] = ()
    absorbed: tuple[fx.Node, ...] = ()  # nodes the region computes besides ``node`` (add)
    emit: Callable[[RegionBuilder, list[str], str], str] | None = None

    @property
    def input_nodes(self) -> tuple[fx.Node, ...]:
        return (self.x_q, *self.more_inputs)

    def build_region(self) -> Region:
        """The one-op region of this layer."""
        b = RegionBuilder(self.node.name)
        names = [b.input(n, shape, s, z) for n, shape, s, z in self.input_specs]
        return b.build([self.emit(b, names, "y")])


@dataclasses.dataclass
class Decision:
    node: str
    op: str
    device: str  # "npu" | "cpu"
    reason: str
    macs: int
    layer: Layer | None = None

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "device": self.device,
                "reason": self.reason, "macs": self.macs}


def legalization(symmetric_activations: bool = False,
                 fusable: tuple[str, ...] = ("relu", "relu6"),
                 batch_matmul: bool = False, tables: tuple[str, ...] = (),
                 softmax: bool = False) -> tuple:
    """The TVM layer's legalization, splitting the fused activations the NPU cannot apply
    off their layers, then quantizing the outputs of NPU candidate layers that the
    fake-quant program left in float (the NPU writes int8 only; symmetric where the
    description forbids activation zero points); with ``batch_matmul`` (the description
    has ``ops.matmul``) attention becomes two int8 batch matmuls (``attention.py``)."""
    from edgecc.pipeline_text import PassStep
    from edgecc.targets.npu.attention import DecomposeAttention
    from edgecc.targets.npu.legalize import QuantizeLayerOutputs, SplitActivations

    steps = (*TVM_LEGALIZATION,
             PassStep(SplitActivations, SplitActivations.Options(fusable=fusable)),
             PassStep(QuantizeLayerOutputs, QuantizeLayerOutputs.Options(
                 symmetric=symmetric_activations, tables=tables)))
    if batch_matmul:
        steps += (PassStep(DecomposeAttention, DecomposeAttention.Options(
            symmetric=symmetric_activations, softmax=softmax and not symmetric_activations)),)
    return steps


def npu_softmax(desc: NpuDescription) -> str:
    """Why the description's NPU does not take edgecc's int8 softmax ("" when it does)."""
    if desc.op("softmax") is None:
        return "softmax is not among the NPU's ops"
    if desc.quantization.activation_zero_point == "zero":
        return ("TFLite's int8 softmax writes zero point -128, and the NPU takes symmetric "
                "activations only")
    return ""


def table_activations(desc: NpuDescription) -> tuple[str, ...]:
    """The element-wise activations (torch op names) the description runs as tables."""
    return tuple(base for base, name in TABLE_BASES.items() if desc.op(name) is not None)


def fusable_activations(desc: NpuDescription) -> tuple[str, ...]:
    """The activations some pattern of the description fuses after a conv / linear."""
    return tuple(sorted({a for p in desc.patterns if p.root in (
        "conv2d", "depthwise_conv2d", "fully_connected") for a in p.fuse
        if a in ACTIVATIONS and desc.op(a) is not None}))


def _shape(node: Any) -> tuple[int, ...]:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    shape = getattr(val, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else ()


def layer_macs(node: fx.Node) -> int:
    """Multiply-accumulates of a conv / linear / matmul / attention node (0 for others)."""
    base = _base(node)
    out = _shape(node)
    if base in ("matmul", "bmm", "mm") and out:
        return math.prod(out) * _shape(node.args[0])[-1]
    if base in ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu"):
        q, k = _shape(node.args[0]), _shape(node.args[1])
        return 2 * math.prod(q[:-1]) * k[-2] * q[-1] if q and k else 0
    if len(node.args) < 2:
        return 0
    w = _shape(node.args[1])
    if not out or not w:
        return 0
    if base in CONV_OPS:
        return math.prod(out) * math.prod(w[1:])
    if base in LINEAR_OPS:
        return math.prod(out) * w[-1]
    return 0


def _activation(node: fx.Node) -> str | None:
    base = _base(node)
    if base == "conv_act":
        return node.args[9]
    if base == "linear_act":
        return node.args[3] if len(node.args) > 3 else None
    return None


def _tflite_padding(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], pad: tuple[int, int]) -> str | None:
    """SAME or VALID when the graph's symmetric padding is exactly that, else None."""
    if pad == (0, 0):
        return "VALID"
    same = [same_padding(size[i], kernel[i], stride[i], dilation[i]) for i in range(2)]
    if all(same[i] == (pad[i], pad[i]) for i in range(2)):
        return "SAME"
    return None


class _Reader:
    def __init__(self, constant: Callable[[fx.Node], np.ndarray | None]):
        self.constant = constant

    def scalar(self, node: Any) -> np.ndarray | None:
        return self.constant(node) if isinstance(node, fx.Node) else None

    def quantized_input(self, x: Any) -> tuple[dict[str, Any] | None, str]:
        if not is_dequantize(x):
            return None, "its input is not quantized (no dequantize feeding it)"
        if not is_quantize(x.args[0]):
            return None, "its input is a dequantized constant, not an activation"
        sx, zx = self.scalar(x.args[1]), self.scalar(x.args[2])
        if sx is None or zx is None:
            return None, "activation scale is not a constant (dynamic quantization)"
        if x.args[5] != "int8" or sx.size != 1:
            return None, (f"activations are {x.args[5]} "
                          f"{'per-tensor' if sx.size == 1 else 'per-axis'}, the NPU computes "
                          "int8 per-tensor (quantization.activations)")
        return {"q": x.args[0], "sx": float(sx.reshape(-1)[0]),
                "zx": int(zx.reshape(-1)[0])}, ""

    def quantized_weight(self, w: Any) -> tuple[dict[str, Any] | None, str]:
        if not is_dequantize(w):
            return None, "its weight is not quantized"
        wq, sw, zw = (self.scalar(a) for a in (w.args[0], w.args[1], w.args[2]))
        if wq is None or sw is None or zw is None:
            return None, "its weight is not a constant"
        if w.args[5] != "int8" or w.args[4]:
            return None, (f"weights are {w.args[5]}{' per-block' if w.args[4] else ''}; the "
                          "NPU takes int8 per-tensor / per-output-channel (quantization.weights)")
        if np.any(zw != 0):
            return None, "weights are asymmetric; the NPU takes symmetric weights"
        if sw.size > 1 and w.args[3] != 0:
            return None, "weights are quantized per input channel, not per output channel"
        n = wq.shape[0]
        return {"wq": wq.astype(np.int8),
                "sw": np.broadcast_to(sw.reshape(-1), (n,)).astype(np.float32)}, ""

    def output_quantize(self, node: fx.Node) -> tuple[dict[str, Any] | None, str]:
        users = list(node.users)
        if len(users) != 1 or not is_quantize(users[0]):
            return None, "its output is not quantized (the NPU writes int8)"
        q = users[0]
        sy, zy = self.scalar(q.args[1]), self.scalar(q.args[2])
        if sy is None or zy is None or sy.size != 1 or q.args[7] != "int8" or q.args[4]:
            return None, "its output quantization is not int8 per-tensor with constant scale"
        if (int(q.args[5]), int(q.args[6])) != (-128, 127):
            return None, f"output range [{q.args[5]}, {q.args[6]}] is not the int8 range"
        return {"q": q, "sy": float(sy.reshape(-1)[0]), "zy": int(zy.reshape(-1)[0])}, ""


def _assumed(node: fx.Node, constant) -> tuple[dict, dict, dict]:
    """Stand-in quantization for a float layer (inspect before compression)."""
    w = constant(node.args[1])
    wf = np.asarray(w if w is not None else np.zeros(_shape(node.args[1])), np.float32)
    n = wf.shape[0] if wf.ndim else 1
    amax = np.abs(wf.reshape(n, -1)).max(axis=1) if wf.size else np.ones(n)
    sw = np.maximum(amax / 127.0, 1e-8).astype(np.float32)
    wq = np.clip(np.round(wf / sw.reshape((n,) + (1,) * (wf.ndim - 1))), -127, 127)
    return ({"q": None, "sx": 0.05, "zx": 0}, {"wq": wq.astype(np.int8), "sw": sw},
            {"q": None, "sy": 0.05, "zy": 0})


def _bias(node: fx.Node, constant, channels: int, sx: float, sw: np.ndarray) -> tuple[
        np.ndarray | None, str]:
    b = node.args[2] if len(node.args) > 2 else None
    if b is None:
        return np.zeros(channels, np.int32), ""
    value = constant(b)
    if value is None:
        return None, "its bias is not a constant"
    scale = np.float32(sx) * sw.astype(np.float32)  # TFLite's bias scale, in float32
    q = np.round(np.asarray(value, np.float64).reshape(-1) / scale.astype(np.float64))
    if np.any(np.abs(q) >= 2**31):
        return None, "its bias does not fit int32 at scale s_x * s_w"
    return q.astype(np.int32), ""


def _layer(node: fx.Node, desc: NpuDescription, reader: _Reader,
           assume_quantized: bool) -> tuple[Layer | None, str]:
    base = _base(node)
    if assume_quantized:
        xin, win, yout = _assumed(node, reader.constant)
    else:
        xin, why = reader.quantized_input(node.args[0])
        if xin is None:
            return None, why
        win, why = reader.quantized_weight(node.args[1])
        if win is None:
            return None, why
        yout, why = reader.output_quantize(node)
        if yout is None:
            return None, why
        why = _zero_points(desc, [xin["zx"], yout["zy"]])
        if why:
            return None, why
    act = _activation(node)
    if act not in ACTIVATIONS:
        return None, f"fused activation {act} is not one the NPU applies in the requantization"
    why = _fusable(desc, "fully_connected" if base in LINEAR_OPS else "conv2d", act)
    if why:
        return None, why
    xshape, yshape, wq, sw = _shape(node.args[0]), _shape(node), win["wq"], win["sw"]
    if base in CONV_OPS:
        stride, padding, dilation, transposed, _, groups = node.args[3:9]
        if transposed:
            return None, "transposed convolution is not lowered to the NPU by edgecc yet"
        if len(xshape) != 4 or wq.ndim != 4:
            return None, f"{len(xshape) - 2}-D convolution; the NPU runs 2-D convolutions"
        n, c, h, w = xshape
        oc, cg, kh, kw = wq.shape
        if groups == 1:
            kind, multiplier = "conv2d", None
        elif cg == 1 and oc % c == 0 and groups == c:
            kind, multiplier = "depthwise_conv2d", oc // c
        else:
            return None, f"grouped convolution ({groups} groups) is neither conv2d nor depthwise"
        spec = desc.op(kind)
        if spec is None:
            return None, f"{kind} is not in the NPU's ops"
        stride, dilation, pad = tuple(stride), tuple(dilation), tuple(padding)
        tfl = _tflite_padding((h, w), (kh, kw), stride, dilation, pad)
        pads = (pad[0], pad[1], pad[0], pad[1])
        why = spec.check(dtype="int8", shapes=[(n, h, w, c), (yshape[0], yshape[2], yshape[3],
                                                              yshape[1])],
                         kernel=(kh, kw), stride=stride, dilation=dilation,
                         padding=tfl or "VALID", pads=pads, groups=1 if kind == "conv2d" else None,
                         depth_multiplier=multiplier, channels=(c, oc),
                         weight_abs_sum=int(np.abs(wq.astype(np.int64)).reshape(oc, -1)
                                            .sum(axis=1).max()))
        if why is None:
            bias, why = _bias(node, reader.constant, oc, xin["sx"], sw)
            if bias is not None:
                why = spec.check(bias_max_abs=int(np.abs(bias.astype(np.int64)).max()))
        if why:
            return None, why
        # explicit padding TFLite's SAME does not express: a PAD op inside the region where
        # the NPU has one and the codegen writes multi-op regions (Vela), else on the CPU
        region_pad = not tfl and desc.codegen == "vela" and desc.op("pad") is not None
        layer = Layer(node, kind, xin["q"], yout["q"], pads, tfl or "VALID",
                      (0, 0, 0, 0) if tfl or region_pad else pads)
        ph, pw = (2 * pad[0], 2 * pad[1]) if any(layer.cpu_pad) else (0, 0)
        layer.input_specs = (("x", (n, h + ph, w + pw, c), xin["sx"], xin["zx"]),)

        def emit(b, names, out):
            x = b.pad(names[0], pads) if region_pad else names[0]
            common = dict(out_scale=yout["sy"], out_zero_point=yout["zy"], stride=stride,
                          padding=layer.padding, dilation=dilation,
                          activation=ACTIVATIONS[act], name=out)
            if kind == "conv2d":
                return b.conv2d(x, wq.transpose(0, 2, 3, 1), bias, sw, **common)
            return b.depthwise_conv2d(x, wq.transpose(1, 2, 3, 0), bias, sw,
                                      depth_multiplier=multiplier, **common)

        layer.emit = emit
        layer.region = layer.build_region()
        return layer, ""
    # linear
    spec = desc.op("fully_connected")
    if spec is None:
        return None, "fully_connected is not in the NPU's ops"
    k = xshape[-1]
    oc = wq.shape[0]
    rows = math.prod(xshape[:-1])
    why = spec.check(dtype="int8", shapes=[(rows, k), (rows, oc)], reduced_axis=k,
                     weight_abs_sum=int(np.abs(wq.astype(np.int64)).sum(axis=1).max()))
    if why is None:
        bias, why = _bias(node, reader.constant, oc, xin["sx"], sw)
        if bias is not None:
            why = spec.check(bias_max_abs=int(np.abs(bias.astype(np.int64)).max()))
    if why:
        return None, why
    layer = Layer(node, "fully_connected", xin["q"], yout["q"], (0, 0, 0, 0), "VALID",
                  (0, 0, 0, 0))
    layer.input_specs = (("x", (rows, k), xin["sx"], xin["zx"]),)
    layer.emit = lambda b, names, out: b.fully_connected(
        names[0], wq, bias, sw, out_scale=yout["sy"], out_zero_point=yout["zy"],
        activation=ACTIVATIONS[act], name=out)
    layer.region = layer.build_region()
    return layer, ""


def _zero_points(desc: NpuDescription, zero_points: list[int]) -> str:
    """Why the activation zero points do not fit the description ("" when they do)."""
    if desc.quantization.activation_zero_point == "zero" and any(zero_points):
        return (f"activation zero points {zero_points}: the NPU takes symmetric activations "
                "(quantization.activations.zero_point: zero)")
    return ""


def _fusable(desc: NpuDescription, root: str, act: str | None) -> str:
    """Why the description cannot fuse ``act`` after ``root`` ("" when it can)."""
    if act is None:
        return ""
    if desc.op(act) is None:
        return f"fused {act} is not among the NPU's ops (ops.{act})"
    patterns = [p for p in desc.patterns if p.root == root or (
        root == "conv2d" and p.root == "depthwise_conv2d")]
    if patterns and not any(act in p.fuse for p in patterns):
        return f"no pattern fuses {act} after {root} (patterns[].fuse)"
    return ""


def fused_relu(node: fx.Node) -> fx.Node | None:
    """The relu that is an add's only reader (fused into the ADD as its activation)."""
    users = list(node.users)
    if len(users) == 1 and _base(users[0]) == "relu" and users[0].op == "call_function":
        return users[0]
    return None


def _quantized_io(node: fx.Node, inputs: list[Any], out: fx.Node, desc: NpuDescription,
                  reader: _Reader) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
    """The int8 inputs (each ``dq(q(...))``) and the int8 output quantize of a region op
    reading ``inputs`` and writing ``out``, or the reason one of them is not int8 per tensor
    (or has a zero point the NPU does not take)."""
    ins = []
    for a in inputs:
        xin, why = reader.quantized_input(a)
        if xin is None:
            return [], None, why
        ins.append(xin)
    yout, why = reader.output_quantize(out)
    if yout is None:
        return [], None, why
    why = _zero_points(desc, [i["zx"] for i in ins] + [yout["zy"]])
    return (ins, yout, "") if not why else ([], None, why)


def _binary_layer(node: fx.Node, desc: NpuDescription, reader: _Reader
                  ) -> tuple[Layer | None, str]:
    """Two int8 activations (``byoc._binary_layer``): ``add(dq(q_a), dq(q_b)) [-> relu] ->
    q`` as an int8 ADD (same shapes, no broadcast; a relu reading only the add is its fused
    activation), or ``matmul(dq(q_a), dq(q_b)) -> q``, 3-D ``(B, M, K) x (B, K, N)``: an
    int8 BATCH_MATMUL (attention's products after ``npu-decompose-attention``)."""
    name = "add" if _base(node) == "add" else "matmul"
    spec = desc.op(name)
    if spec is None:
        return None, f"{name} is not among the NPU's ops"
    if name == "add" and (len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1):
        return None, "add with a scalar or alpha is not lowered to the NPU"
    relu = fused_relu(node) if name == "add" else None
    if relu is not None and desc.op("relu") is None:
        return None, "the relu after it is not among the NPU's ops (ops.relu)"
    ins, yout, why = _quantized_io(node, list(node.args[:2]), relu or node, desc, reader)
    if yout is None:
        return None, why
    sa, sb = _shape(node.args[0]), _shape(node.args[1])
    if name == "add":
        if sa != sb or not sa:
            return None, f"add of shapes {list(sa)} and {list(sb)} (broadcast) stays on the CPU"
        sa = sb = (sa[0], sa[2], sa[3], sa[1]) if len(sa) == 4 else sa
        why = spec.check(dtype="int8", shapes=[sa, sb])
    else:
        if len(sa) != 3 or len(sb) != 3 or sa[0] != sb[0] or sa[2] != sb[1]:
            return None, (f"matmul of shapes {list(sa)} x {list(sb)}; the NPU's batch matmul "
                          "takes (B, M, K) x (B, K, N)")
        why = spec.check(dtype="int8", shapes=[sa, sb, (sa[0], sa[1], sb[2])],
                         reduced_axis=sa[2])
    if why:
        return None, why
    layer = Layer(relu if relu is not None else node, BY_NAME[name].kind, ins[0]["q"],
                  yout["q"], (0, 0, 0, 0), "VALID", (0, 0, 0, 0), more_inputs=(ins[1]["q"],),
                  absorbed=(node,) if relu is not None else ())
    layer.input_specs = (("a", sa, ins[0]["sx"], ins[0]["zx"]),
                         ("b", sb, ins[1]["sx"], ins[1]["zx"]))
    act = "RELU" if relu is not None else "NONE"
    if name == "add":
        layer.emit = lambda b, names, out: b.add(names[0], names[1], yout["sy"], yout["zy"],
                                                 activation=act, name=out)
    else:
        layer.emit = lambda b, names, out: b.batch_matmul(names[0], names[1], yout["sy"],
                                                          yout["zy"], name=out)
    layer.region = layer.build_region()
    return layer, ""


# torch op -> the ops.OPS row _data_op checks (pools, mean, mul)
POOL_BASES = {b: op.name for op in OPS if op.family == "pool" or op.name == "mul"
              for b in op.fx}


def _data_op(node: fx.Node, desc: NpuDescription, reader: _Reader
             ) -> tuple[str | None, str, fx.Node | None]:
    """A max / average pool, a mean over H and W or a mul between int8 values (``byoc.py``'s
    patterns): (region kind, "", the flatten it absorbs) or (None, why, None)."""
    kind = POOL_BASES[_base(node)]
    if desc.op(kind) is None:
        return None, f"{kind} is not among the NPU's ops", None
    inputs = node.args[:2] if kind == "mul" else node.args[:1]
    for a in inputs:
        xin, why = reader.quantized_input(a)
        if xin is None:
            return None, why, None
    last, flat = node, None
    if _base(node) == "max_pool2d_with_indices":
        values = [u for u in node.users if _base(u) == "getitem" and u.args[1] == 0]
        if len(values) != 1 or any(u not in values and u.users for u in node.users):
            return None, "its indices are read", None
        last = values[0]
    users = list(last.users)
    if kind != "mul" and len(users) == 1 and _base(users[0]) in ("view", "reshape", "flatten"):
        last = flat = users[0]
    yout, why = reader.output_quantize(last)
    if yout is None:
        return None, why, None
    xshape = _shape(node.args[0])
    if kind == "mul":
        if _shape(node.args[1]) != xshape:
            return None, "mul with broadcasting stays on the CPU", None
        return kind, "", None
    if len(xshape) != 4:
        return None, f"{kind} of a {len(xshape)}-D tensor (the NPU pools NHWC maps)", None
    n, c, h, w = xshape
    spec = desc.op(kind)
    if kind == "mean":
        if sorted(int(a) % 4 for a in node.args[1]) != [2, 3]:
            return None, "a mean other than over H and W", None
        why = spec.check(dtype="int8", shapes=[(n, h, w, c)], reduced_axis=h * w)
        return (None, why, None) if why else (kind, "", flat)
    kernel = tuple(node.args[1]) * (2 if len(node.args[1]) == 1 else 1)
    stride = tuple(node.args[2] if len(node.args) > 2 and node.args[2] else kernel)
    stride = stride * (2 if len(stride) == 1 else 1)
    pad = tuple(node.args[3]) if len(node.args) > 3 else (0, 0)
    pad = pad * (2 if len(pad) == 1 else 1)
    padding = _tflite_padding((h, w), kernel, stride, (1, 1), pad)
    if padding is None:
        return None, f"pool padding {list(pad)} that TFLite's SAME / VALID do not express", \
            None
    why = spec.check(dtype="int8", shapes=[(n, h, w, c)], kernel=kernel, stride=stride,
                     padding=padding)
    return (None, why, None) if why else (kind, "", flat)


TABLE_BASES = {b: op.name for op in OPS if op.family == "table" for b in op.fx}


def _table_op(node: fx.Node, desc: NpuDescription, reader: _Reader) -> str:
    """Why an element-wise activation cannot be an NPU table op ("" when it can):
    ``dq(q_x) -> sigmoid / tanh / hardswish / leaky_relu (slope >= 0) / gelu -> q``."""
    name = TABLE_BASES[_base(node)]
    if desc.op(name) is None:
        return f"{name} is not among the NPU's ops"
    _, yout, why = _quantized_io(node, [node.args[0]], node, desc, reader)
    if yout is None:
        return why
    if name == "leaky_relu":
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
        if slope < 0:
            return f"leaky_relu slope {slope:g} < 0 is not lowered to the NPU"
    if name == "gelu" and node.kwargs.get("approximate", "none") not in ("none", "tanh"):
        return f"gelu approximation {node.kwargs['approximate']!r}"
    shape = _shape(node)
    nhwc = (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape
    return desc.op(name).check(dtype="int8", shapes=[nhwc, nhwc]) or ""


def _softmax_op(node: fx.Node, desc: NpuDescription, reader: _Reader) -> str:
    """Why a softmax cannot be the NPU's int8 SOFTMAX ("" when it can): ``dq(q_x) ->
    softmax(last axis of <= 3-D) -> q`` (attention's, after npu-decompose-attention)."""
    why = npu_softmax(desc)
    if why:
        return why
    _, yout, why = _quantized_io(node, [node.args[0]], node, desc, reader)
    if yout is None:
        return why
    shape = _shape(node)
    dim = int(node.args[1]) if len(node.args) > 1 else -1
    if not 1 <= len(shape) <= 3 or dim % len(shape) != len(shape) - 1:
        return (f"softmax over dim {dim} of a {len(shape)}-D tensor (the NPU's is over the last "
                "axis of <= 3-D)")
    return desc.op("softmax").check(dtype="int8",
                                    shapes=[(1,) * (4 - len(shape)) + shape]) or ""


def _data_movement_op(node: fx.Node, desc: NpuDescription, reader: _Reader) -> str:
    """Why a concatenation or a slice cannot be the NPU's CONCATENATION / STRIDED_SLICE
    ("" when it can): int8 per-tensor inputs and output, positive steps, <= 4-D (a 4-D
    slice steps only over H or W)."""
    kind = "concat" if _base(node) == "cat" else "strided_slice"
    if desc.op(kind) is None:
        return f"{kind} is not among the NPU's ops"
    inputs = list(node.args[0]) if kind == "concat" else [node.args[0]]
    if kind == "concat" and not 2 <= len(inputs) <= 4:
        return f"concatenation of {len(inputs)} tensors (the NPU pattern takes 2 to 4)"
    _, yout, why = _quantized_io(node, inputs, node, desc, reader)
    if yout is None:
        return why
    shape = _shape(node)
    if not 1 <= len(shape) <= 4:
        return f"{kind} of a {len(shape)}-D tensor"
    if kind == "strided_slice":
        dim = int(node.args[1]) % len(shape) if len(node.args) > 1 else 0
        step = int(node.args[4]) if len(node.args) > 4 else 1
        if step <= 0 or (step != 1 and not (len(shape) == 4 and dim in (2, 3))):
            return (f"slice with step {step} over dim {dim} (Vela: \"Stride must be "
                    "non-negative (and over W or H)\")")
    nhwc = (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape
    return desc.op(kind).check(dtype="int8", shapes=[nhwc]) or ""


# the families whose fx check is a reason only ("" when the op fits), and what the report says
_CHECKS = {"table": _table_op, "softmax": _softmax_op, "concat": _data_movement_op,
           "slice": _data_movement_op}
_REGION_REASON = {"table": "{} region (256-entry int8 table)",
                  "softmax": "{} region (TFLite int8 SOFTMAX)", "concat": "{} region",
                  "slice": "{} region"}


def _is_structural(node: fx.Node) -> bool:
    """Quantization bookkeeping, not compute: not counted in the report's op share."""
    return _base(node) in QUANT_OPS or node.op != "call_function" or _base(node) in (
        "getitem", "_assert_tensor_metadata")


def classify(graph: fx.Graph, constant: Callable[[fx.Node], np.ndarray | None],
             desc: NpuDescription, assume_quantized: bool = False) -> list[Decision]:
    """One ``Decision`` per compute node of ``graph`` (see the module docstring)."""
    reader = _Reader(constant)
    out = []
    fused: dict[fx.Node, Layer] = {}  # relu node -> the add region it is the activation of
    absorbed: dict[fx.Node, str] = {}  # a flatten a pool region computes -> which
    for node in graph.nodes:
        if node.op != "call_function" or _is_structural(node):
            continue
        base = _base(node)
        macs = layer_macs(node)
        if base in CONV_OPS + LINEAR_OPS:
            layer, why = _layer(node, desc, reader, assume_quantized)
            if layer is not None:
                out.append(Decision(node.name, base, "npu", f"{layer.kind} region", macs,
                                    layer))
                continue
            out.append(Decision(node.name, base, "cpu", why, macs))
            continue
        if node in absorbed:
            out.append(Decision(node.name, base, "npu", f"inside the {absorbed[node]}", macs))
            continue
        if base in POOL_BASES and not assume_quantized:
            kind, why, flat = _data_op(node, desc, reader)
            if kind is not None and flat is not None:
                absorbed[flat] = f"{kind} region (flatten)"
            out.append(Decision(node.name, base, "npu" if kind else "cpu",
                                f"{kind} region" if kind else why, macs))
            continue
        if base in ("matmul", "bmm") and not assume_quantized:
            layer, why = _binary_layer(node, desc, reader)
            out.append(Decision(node.name, base, "npu" if layer else "cpu",
                                "batch_matmul region" if layer else why, macs, layer))
            continue
        rows = for_fx(base)
        if rows and rows[0].family in _CHECKS:
            op = rows[0]
            if assume_quantized and op.family == "table" and desc.op(op.name):
                out.append(Decision(node.name, base, "npu", f"{op.name} region (256-entry "
                                    "int8 table, when its input and output are int8 per "
                                    "tensor, as compile makes them)", macs))
                continue
            if not assume_quantized:
                why = _CHECKS[op.family](node, desc, reader)
                out.append(Decision(node.name, base, "cpu" if why else "npu",
                                    why or _REGION_REASON[op.family].format(op.name), macs))
                continue
        if node in fused:
            out.append(Decision(node.name, base, "npu", f"fused into the add region of "
                                f"{fused[node].node.name}", macs, fused[node]))
            continue
        if base == "add" and not assume_quantized:
            layer, why = _binary_layer(node, desc, reader)
            if layer is not None and layer.absorbed:  # add + relu: one region at the relu
                out.append(Decision(node.name, base, "npu", "add region (relu fused)", macs))
                fused[layer.node] = layer
                continue
            out.append(Decision(node.name, base, "npu" if layer else "cpu",
                                "add region" if layer else why, macs, layer))
            continue
        if (base == "scaled_dot_product_attention" and assume_quantized
                and desc.op("matmul") is not None):
            out.append(Decision(node.name, base, "npu", "as two int8 batch matmuls (Q.K^T, "
                                "P.V; npu-decompose-attention when compiled), the softmax "
                                "between them where the NPU has it, else on the CPU", macs))
            continue
        if base == "add" and desc.op("add") is not None:
            out.append(Decision(node.name, base, "npu", "add region (when both inputs and "
                                "the output are int8 per tensor, as compile makes them)", 0))
            continue
        out.append(Decision(node.name, base, "cpu",
                            "edgecc offloads conv / depthwise conv / linear / add / mul / batch "
                            "matmul / pool / mean / table activation (sigmoid, tanh, "
                            "hardswish, leaky_relu, gelu) / softmax / concat / strided slice "
                            "regions (int8 in and out) only so far"

                            if desc.op(_npu_name(base)) else
                            f"{base} is not among the NPU's ops", macs))
    return out


def classify_program(program: Any, desc: NpuDescription,
                     assume_quantized: bool = False) -> list[Decision]:
    """``classify`` on a ``Program``'s own graph (its constants are get_attr nodes)."""
    def constant(node: fx.Node) -> np.ndarray | None:
        if node.op != "get_attr":
            return None
        return program.tensor(node).detach().cpu().numpy()

    return classify(program.graph, constant, desc, assume_quantized)


# torch op -> description op name, for the reason of an op edgecc does not offload
_NPU_NAMES = {**{b: op.name for op in reversed(OPS) for b in op.fx},
              "sub": "sub", "relu": "relu", "hardtanh": "relu6", "view": "reshape",
              "reshape": "reshape", "permute": "transpose"}


def _npu_name(base: str) -> str:
    return _NPU_NAMES.get(base, base)


def summarize(decisions: list[Decision], desc: NpuDescription) -> dict[str, Any]:
    """The deployability report: per op NPU / CPU with the reason, share of ops and MACs."""
    ops = len(decisions)
    npu = [d for d in decisions if d.device == "npu"]
    macs = sum(d.macs for d in decisions)
    npu_macs = sum(d.macs for d in npu)
    return {
        "device": desc.name, "codegen": desc.codegen, "description": desc.path,
        "ops": ops, "npu_ops": len(npu),
        "npu_op_share": len(npu) / ops if ops else 0.0,
        "macs": macs, "npu_macs": npu_macs,
        "npu_mac_share": npu_macs / macs if macs else 0.0,
        "partitioning": "fx graph classification (the explanation layer; compile splits the "
                        "artifact by TVM Relax BYOC)",
        "per_op": [d.to_json() for d in decisions],
    }


def format_report(report: dict[str, Any]) -> str:
    """The deployability report as text (``edgecc inspect -t npu``)."""
    lines = [f"NPU {report['device']} ({report['codegen']} codegen): "
             f"{report['npu_ops']}/{report['ops']} ops "
             f"({100 * report['npu_op_share']:.1f}%), {report['npu_macs']:,}/{report['macs']:,} "
             f"MACs ({100 * report['npu_mac_share']:.1f}%) on the NPU"]
    for d in report["per_op"]:
        lines.append(f"  {d['device'].upper():<4}{d['node']:<28}{d['op']:<14}"
                     f"{d['macs']:>12,}  {d['reason']}")
    return "\n".join(lines)
