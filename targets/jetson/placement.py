"""jetson-qdq-placement: move edgecc's Q/DQ to where TensorRT fuses them (legalization).

TensorRT builds an INT8 kernel for ``DQ -> Conv/Gemm/MatMul`` regions and fuses a following
``Add`` when its *residual* input is quantized too. NVIDIA Model Optimizer's ONNX PTQ
(0.47, ``modelopt.onnx.quantization``) is the reference for where Q/DQ go; this pass makes an
edgecc program quantized by ``quantize{scheme=w8a8}`` (Q/DQ on the inputs of every layer,
per-channel weights) follow the same rules:

* GEMV (``M`` or ``N`` = 1) and small GEMMs (``N`` or ``K`` < 16) stay float: no tensor
  cores, and Q/DQ there slows TensorRT down (ModelOpt ``find_nodes_from_matmul_to_exclude``).
* Convolutions with fewer than 16 input or output channels stay float unless TensorRT has
  an INT8 kernel for them (groups 1, a channel count divisible by 8, first layer or the other
  count >= 16, square kernel; or grouped with ``OC % 8 == 0`` and kernel >= 3), as in
  ModelOpt ``find_nodes_from_convs_to_exclude``.
* INT4 weight-only (w4a16): TensorRT runs INT4 weights on Gemm/MatMul only; convolutions go
  back to float.
* Residual ``Add``: the input *not* on the longer path from the two inputs' lowest common
  ancestor (ModelOpt ``build_non_residual_input_map``) gets a per-tensor Q/DQ, calibrated on
  the calibration batches, or shares the Q/DQ that value already has.
* One Q/DQ per value: duplicates with the same parameters are merged (fan-out shares one).
* Activation scales are ``amax / 127`` as TensorRT's calibrators and ModelOpt set them
  (edgecc's quantize uses ``amax / 127.5``, which clips ``+amax`` by half a step).
* ``narrow_range``: activation quantize nodes clamp to [-127, 127].

Before (ResNet basic block after quantize)::

    %a = dq(q(%x)); %c1 = conv(%a, dq(@w1)); ... %c2 = conv(..., dq(@w2)); %y = add(%c2, %x)

After::

    %a = dq(q(%x)); %c1 = conv(%a, dq(@w1)); ... %c2 = conv(..., dq(@w2)); %y = add(%c2, %a)

Lossy (the residual Q/DQ); the layers returned to float are listed with the reason.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import torch
import torch.fx as fx

from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import insert_qdq, record_values
from edgecc.program import Program, op_name
from edgecc.quant import (
    is_dequantize, is_quantize, node_params, params_from_scale, qformat, scale_from_range,
)

aten = torch.ops.aten
CONV = "aten.convolution"
LINEAR = "aten.linear"
MIN_GEMM_DIM = 16  # ModelOpt _MIN_MATMUL_DIM
FLOAT_REASON = "jetson_float_reason"  # node meta: why a layer stays float (lower reports it)
AMAX_127 = "jetson_amax_over_127"  # node meta: this quantize's scale is amax / 127
# Ops TensorRT fuses between a convolution and a residual Add (ModelOpt's fusible paths:
# BiasAdd, ConstMul, BatchNormalization, Relu, MaxPool, Sigmoid+Mul) plus copy ops.
_THROUGH = {"aten.relu", "aten._native_batch_norm_legit_no_training", "aten.batch_norm",
            "aten.max_pool2d", "aten.max_pool2d_with_indices", "aten.silu", "aten.view",
            "aten.reshape", "aten.clone", "aten.contiguous", "getitem"}


@dataclasses.dataclass(frozen=True)
class PlacementOptions:
    quantize_gemv: bool = False
    quantize_small_convs: bool = False
    narrow_range: bool = False


def weight_dq(program: Program, node: fx.Node) -> fx.Node | None:
    """The ``dequantize`` of a stored weight feeding conv/linear ``node``, if any."""
    if len(node.args) < 2:
        return None
    w = node.args[1]
    if is_dequantize(w) and all(program.is_constant(a) for a in w.args[:3]):
        return w
    return None


def _shape(node: Any) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if val is None or not hasattr(val, "shape"):
        return None
    try:
        return tuple(int(d) for d in val.shape)
    except (TypeError, ValueError):  # symbolic
        return None


def _unwrap_qdq(node: fx.Node) -> fx.Node:
    if is_dequantize(node) and is_quantize(node.args[0]):
        return node.args[0].args[0]
    return node


def float_reason(program: Program, node: fx.Node, opts: PlacementOptions) -> str:
    """Why a quantized conv/linear should stay float for TensorRT ('' = keep it)."""
    dq = weight_dq(program, node)
    assert dq is not None
    fmt = qformat(dq.args[5])
    weight_only = not is_dequantize(node.args[0])
    if fmt.bits == 4 and op_name(node) == CONV:
        return "INT4 weight-only runs on Gemm/MatMul only in TensorRT"
    if weight_only:
        return ""
    w = _shape(dq)
    if w is None:
        return ""
    if op_name(node) == LINEAR and not opts.quantize_gemv:
        x = _shape(node.args[0])
        n, k = w[0], w[1]
        m = 0 if x is None else int(torch.tensor(x[:-1]).prod().item()) if len(x) > 1 else 1
        if m == 1 or n == 1:
            return f"GEMV (M={m}, N={n}): no tensor cores"
        small = [f"{d}={v}" for d, v in (("N", n), ("K", k)) if v < MIN_GEMM_DIM]
        if small:
            return f"small GEMM ({', '.join(small)} < {MIN_GEMM_DIM}): Q/DQ slows TensorRT down"
    if op_name(node) == CONV and not opts.quantize_small_convs:
        transposed = bool(node.args[6])
        oc, ic, kernel = w[0], w[1], w[2:]
        groups = int(node.args[8])
        if transposed or (oc >= 16 and ic >= 16):
            return ""
        first = _unwrap_qdq(node.args[0]).op == "placeholder"
        if groups == 1 and (oc % 8 == 0 or ic % 8 == 0) and (first or oc >= 16 or ic >= 16) \
                and len(set(kernel)) == 1:
            return ""
        if groups > 1 and oc % 8 == 0 and all(k >= 3 for k in kernel):
            return ""
        return f"convolution with {ic} input / {oc} output channels (< 16): no INT8 kernel"
    return ""


def _unquantize(program: Program, node: fx.Node) -> None:
    graph = program.graph
    dq = weight_dq(program, node)
    p = node_params(dq, program.tensor)
    value = p.dequantize(program.tensor(dq.args[0]), torch.float32)
    const = program.add_constant(f"{node.name}_float_weight", value, before=node)
    node.replace_input_with(dq, const)
    x = node.args[0]
    if is_dequantize(x) and is_quantize(x.args[0]):
        node.replace_input_with(x, x.args[0].args[0])
    for n in (dq, x, x.args[0] if isinstance(x, fx.Node) and x.args else None):
        if isinstance(n, fx.Node) and n.op == "call_function" and not n.users:
            graph.erase_node(n)


def backbone(node: fx.Node) -> fx.Node | None:
    """The convolution whose output reaches ``node`` through ops TensorRT fuses into it."""
    seen = 0
    while isinstance(node, fx.Node) and seen < 16:
        name = op_name(node)
        if name == CONV:
            return node
        if name in _THROUGH:
            node = node.args[0]
        elif name in ("aten.add", "aten.mul") and len(node.args) == 2 and (
                not isinstance(node.args[1], fx.Node) or node.args[1].op == "get_attr"):
            node = node.args[0]  # bias add / constant scale
        else:
            return None
        seen += 1
    return None


def _ancestors(node: fx.Node) -> dict[fx.Node, int]:
    dist = {node: 0}
    todo = deque([node])
    while todo:
        n = todo.popleft()
        for a in n.all_input_nodes:
            if a.op != "get_attr" and a not in dist:
                dist[a] = dist[n] + 1
                todo.append(a)
    return dist


def residual_input(add: fx.Node) -> int | None:
    """Index (0/1) of the ``add`` input to quantize so TensorRT fuses the Add into the
    convolution that produces the other input; None when the Add is not a residual add."""
    a, b = add.args[0], add.args[1]
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        return None
    if "get_attr" in (a.op, b.op) or "placeholder" in (a.op, b.op):
        return None
    if _shape(a) is None or _shape(a) != _shape(b):
        return None
    ba, bb = backbone(a), backbone(b)
    if ba is None and bb is None:
        return None
    da, db = _ancestors(a), _ancestors(b)
    common = [(da[n] + db[n], n) for n in da if n in db]
    lca = min(common, key=lambda t: t[0])[1] if common else None
    if ba is not None and bb is not None:
        if ba is bb:
            return None
        # the input on the longer path to the common ancestor is the conv branch
        return 1 if (lca is None or da[lca] > db[lca]) else 0
    conv, other = (0, 1) if ba is not None else (1, 0)
    if lca is not None and lca is (ba if ba is not None else bb):
        return None  # ConvNeXt-like: both paths start at the convolution
    return other


def _act_params(program: Program) -> dict[str, Any] | None:
    """The format of the program's activation quantization (None: weights only)."""
    for node in program.nodes("call_function"):
        if is_quantize(node) and not program.is_constant(node.args[0]):
            return {"dtype": node.args[7], "qmin": node.args[5], "qmax": node.args[6]}
    return None


class JetsonQDQPlacement(Pass):
    """Place Q/DQ where TensorRT fuses them (ModelOpt's rules); see the module docstring."""

    name = "jetson-qdq-placement"
    Options = PlacementOptions
    lossless = False

    def run(self, program: Program, options: PlacementOptions,
            context: PassContext) -> PassResult:
        graph = program.graph
        stats: dict[str, Any] = {"float_layers": {}, "residual_qdq": {}, "merged_qdq": 0}
        layers = [n for n in program.nodes("call_function")
                  if op_name(n) in (CONV, LINEAR) and weight_dq(program, n) is not None]
        for node in layers:
            reason = float_reason(program, node, options)
            if reason:
                _unquantize(program, node)
                node.meta[FLOAT_REASON] = reason
                stats["float_layers"][node.name] = reason
        act = _act_params(program)
        if act is not None and not qformat(act["dtype"]).is_float:
            self._quantize_residuals(program, act, context, stats)
            stats["activation_scales_to_amax_over_127"] = _amax_over_127(program)
            if options.narrow_range:
                for node in program.nodes("call_function"):
                    if is_quantize(node) and node.args[5] == qformat(node.args[7]).qmin:
                        node.update_arg(5, node.args[5] + 1)
        stats["merged_qdq"] = _merge_duplicates(program)
        graph.eliminate_dead_code()
        graph.lint()
        program.graph_module.recompile()
        program.refresh_metadata()
        modified = bool(stats["float_layers"] or stats["residual_qdq"] or stats["merged_qdq"]
                        or stats.get("activation_scales_to_amax_over_127")
                        or options.narrow_range and act is not None)
        stats["float_layer_count"] = len(stats["float_layers"])
        return PassResult(program, modified, stats)

    def _quantize_residuals(self, program: Program, act: dict[str, Any],
                            context: PassContext, stats: dict[str, Any]) -> None:
        todo: list[tuple[fx.Node, int]] = []
        for node in program.nodes("call_function"):
            if op_name(node) != "aten.add" or len(node.args) != 2:
                continue
            idx = residual_input(node)
            if idx is None:
                continue
            conv = backbone(node.args[1 - idx])
            if conv is None or weight_dq(program, conv) is None \
                    or not is_dequantize(conv.args[0]):
                continue  # the convolution runs in float: nothing to fuse into
            if is_dequantize(node.args[idx]):
                continue
            todo.append((node, idx))
        if not todo:
            return
        values = {node.args[idx] for node, idx in todo}
        shared = {}
        for v in values:
            for u in v.users:
                if is_quantize(u) and u.args[4] == 0 and program.tensor(u.args[1]).dim() == 0:
                    dqs = [d for d in u.users if is_dequantize(d)]
                    if dqs:
                        shared[v] = dqs[0]
                        break
        amax: dict[fx.Node, float] = {}
        need = [v for v in values if v not in shared]
        if need:
            batches = list(context.calibration or [])
            if not batches:
                stats["residual_skipped"] = "no calibration data for the residual inputs"
                need = []
            else:
                def on_value(n: fx.Node, value: torch.Tensor) -> None:
                    amax[n] = max(amax.get(n, 0.0), float(value.detach().abs().max()))

                record_values(program, [tuple(b) if isinstance(b, (tuple, list)) else (b,)
                                        for b in batches], need, on_value,
                              desc="residual ranges", progress=context.progress)
        for node, idx in todo:
            v = node.args[idx]
            if v in shared:
                dq = shared[v]
                if list(program.graph.nodes).index(dq) > list(program.graph.nodes).index(node):
                    continue
                node.replace_input_with(v, dq)
                stats["residual_qdq"][node.name] = "shares the Q/DQ of " + v.name
            elif v in amax:
                a = torch.tensor(amax[v])
                scale, zp = scale_from_range(-a, a, act["dtype"], symmetric=True,
                                             qmin=act["qmin"], qmax=act["qmax"])
                params = params_from_scale(act["dtype"], scale, zp, qmin=act["qmin"],
                                           qmax=act["qmax"])
                dq = insert_qdq(program, v, [node], params)
                shared[v] = dq
                stats["residual_qdq"][node.name] = f"new Q/DQ on {v.name}, scale " \
                                                   f"{float(scale):.4g}"


def _amax_over_127(program: Program) -> int:
    """Activation scales ``amax / 127`` (TensorRT's and ModelOpt's convention) instead of
    edgecc's ``amax / 127.5``: with 127.5, ``+amax`` rounds to 128 and clips to 127, so a
    saturated activation (ReLU6 at 6) loses half a step every time. Returns how many
    scales changed (each shared scale constant once)."""
    scales: dict[str, tuple[fx.Node, float]] = {}
    for node in program.nodes("call_function"):
        if not is_quantize(node) or program.is_constant(node.args[0]) \
                or node.meta.get(AMAX_127):
            continue
        node.meta[AMAX_127] = True  # placed once: a second run leaves it alone
        s, zp = node.args[1], node.args[2]
        fmt = qformat(node.args[7])
        if fmt.is_float or not fmt.signed or (node.args[5], node.args[6]) != (fmt.qmin,
                                                                             fmt.qmax):
            continue
        if program.is_constant(s) and program.is_constant(zp) \
                and str(s.target) not in scales and not bool(program.tensor(zp).any()):
            scales[str(s.target)] = (s, (fmt.qmax - fmt.qmin) / 2 / fmt.qmax)
    for s, factor in scales.values():
        program.set_tensor(s, program.tensor(s) * factor)
    return len(scales)


def _merge_duplicates(program: Program) -> int:
    """Make every value have at most one Q/DQ per parameter set (fan-out shares it)."""
    merged = 0
    order = {n: i for i, n in enumerate(program.graph.nodes)}
    for value in list(program.graph.nodes):
        qs = [u for u in value.users if is_quantize(u) and u.args[0] is value]
        if len(qs) < 2:
            continue
        qs.sort(key=order.get)
        keep = qs[0]
        keep_dq = next((d for d in keep.users if is_dequantize(d)), None)
        if keep_dq is None:
            continue
        kp = node_params(keep, program.tensor)
        for q in qs[1:]:
            p = node_params(q, program.tensor)
            same = (p.dtype, p.axis, p.block_size, p.range) == (kp.dtype, kp.axis,
                                                                 kp.block_size, kp.range) \
                and torch.equal(p.scale, kp.scale) and torch.equal(p.zero_point,
                                                                    kp.zero_point)
            if not same:
                continue
            for dq in [d for d in q.users if is_dequantize(d)]:
                if all(order[u] > order[keep_dq] for u in dq.users):
                    dq.replace_all_uses_with(keep_dq)
                    merged += 1
    return merged
