"""Legalization for the NPU: every quantized layer's (and int8 add's) output is int8, as an
NPU writes it.

edgecc's ``quantize`` pass quantizes the inputs of layers; a layer whose output feeds only
float ops (a residual ``add``, the model output) keeps a float output, which no NPU region
can produce. This pass gives such outputs a quantize -> dequantize, so the layer is a whole
``dq -> op -> q`` region; the fake-quant program after it is the reference the artifact is
verified against.

Before::

    %y = conv_act(dq(q(x)), dq(w_q), b, ...)      # users: q(%y) [next layer], add(%y, ...)
    %s = add(%y, %r)

After::

    %y  = conv_act(dq(q(x)), dq(w_q), b, ...)
    %yq = quantize(%y, s_y, z_y)                  # the existing one, or a new one calibrated
    %s  = add(dq(%yq), %r)                        # on the calibration batches (min/max)
"""

from __future__ import annotations

import dataclasses

import torch
import torch.fx as fx

from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.program import Program
from edgecc.quant import DEQUANTIZE, is_dequantize, is_quantize

LAYER_OPS = ("convolution", "conv_act", "linear", "linear_act")
ADD_OPS = ("add",)


@dataclasses.dataclass(frozen=True)
class QuantizeLayerOutputsOptions:
    symmetric: bool = False  # zero point 0 (an NPU whose description forbids zero points)
    # element-wise activations the NPU runs as tables (torch op names: sigmoid, hardswish,
    # ...): one reading an int8 value gets an int8 output too
    tables: tuple[str, ...] = ()


def _base(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def _only_relu(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and _base(users[0]) == "relu":
        return users[0]
    return None


def _candidates(program: Program, tables: tuple[str, ...] = ()) -> list[fx.Node]:
    out = []
    for node in program.nodes("call_function"):
        base = _base(node)
        if base in tables:
            x = node.args[0]
            if not (is_dequantize(x) and is_quantize(x.args[0])):
                continue
        elif base in LAYER_OPS:
            x, w = node.args[0], node.args[1]
            if not (is_dequantize(x) and is_quantize(x.args[0]) and is_dequantize(w)):
                continue
        elif base in ADD_OPS:  # a residual add of two int8 tensors (an NPU ADD region)
            if len(node.args) != 2 or not all(is_dequantize(a) and is_quantize(a.args[0])
                                              for a in node.args):
                continue
            relu = _only_relu(node)
            if relu is not None:  # add -> relu is one ADD with a fused RELU: quantize after
                node = relu
        else:
            continue
        users = list(node.users)
        if users and all(is_quantize(u) for u in users) and len(users) == 1:
            continue
        out.append(node)
    return out


class QuantizeLayerOutputs(Pass):
    """Quantize (int8 per tensor) the float outputs of quantized conv / linear layers."""

    name = "npu-quantize-layer-outputs"
    Options = QuantizeLayerOutputsOptions
    lossless = False

    def run(self, program: Program, options: QuantizeLayerOutputsOptions,
            context: PassContext) -> PassResult:
        # an add becomes a candidate once the layers feeding it have int8 outputs: repeat
        # until nothing changes (a residual chain needs one round per level, two in practice)
        reused = calibrated = 0
        for _ in range(8):
            layers = _candidates(program, options.tables)
            if not layers:
                break
            r, c = self._round(program, layers, context, options.symmetric)
            reused, calibrated = reused + r, calibrated + c
        if not (reused or calibrated):
            return PassResult(program, False, {"quantized_outputs": 0})
        program.graph.lint()
        program.graph_module.recompile()
        program.refresh_metadata()
        return PassResult(program, True, {"quantized_outputs": calibrated,
                                          "reused_quantize": reused})

    def _round(self, program: Program, layers: list[fx.Node],
               context: PassContext, symmetric: bool) -> tuple[int, int]:
        from edgecc.targets.npu.calibrate import QdqPoint, insert_int8_qdq

        graph = program.graph
        reused, calibrate = 0, []
        for node in layers:
            existing = [u for u in node.users if is_quantize(u)]
            floats = [u for u in node.users if not is_quantize(u)]
            if len(existing) == 1:  # float readers read the existing int8 value instead
                q = existing[0]
                with graph.inserting_after(q):
                    dq = graph.call_function(DEQUANTIZE, (q, q.args[1], q.args[2], q.args[3],
                                                          q.args[4], q.args[7],
                                                          torch.float32))
                for u in floats:
                    u.replace_input_with(node, dq)
                reused += 1
            elif not existing:
                calibrate.append(node)
        if calibrate:
            batches = list(context.calibration or [])
            if not batches:
                from edgecc.errors import PreconditionError

                raise PreconditionError(
                    f"{self.name}: the outputs of {len(calibrate)} quantized layer(s) "
                    f"({', '.join(n.name for n in calibrate[:3])}) feed float ops, and the "
                    "NPU writes int8: give calibration data (--calib) to quantize them")
            insert_int8_qdq(program, [QdqPoint(n) for n in calibrate], batches, symmetric,
                            desc="calibrating outputs")
        program.graph_module.recompile()
        return reused, len(calibrate)


@dataclasses.dataclass(frozen=True)
class SplitActivationsOptions:
    # the activations the NPU applies in its requantization (the description's fusable ones)
    fusable: tuple[str, ...] = ("relu", "relu6")


_ACTIVATION_OPS = {
    "relu": (torch.ops.aten.relu.default, ()),
    "relu6": (torch.ops.aten.hardtanh.default, (0.0, 6.0)),
    "gelu": (torch.ops.aten.gelu.default, ()),
    "silu": (torch.ops.aten.silu.default, ()),
    "hardswish": (torch.ops.aten.hardswish.default, ()),
    "sigmoid": (torch.ops.aten.sigmoid.default, ()),
}


class SplitActivations(Pass):
    """Split a fused conv / linear + activation the NPU cannot apply into the layer (for
    the NPU) and the activation (for the CPU): a BERT feed-forward ``linear_act(gelu)``
    becomes ``linear`` then ``gelu``, so the linear is offloaded and ``QuantizeLayerOutputs``
    gives it the int8 output an NPU writes (one more quantization: lossy, calibrated).

    Before::

        %y = linear_act(dq(q(x)), dq(w_q), b, "gelu")

    After::

        %l = linear(dq(q(x)), dq(w_q), b)
        %y = gelu(%l)
    """

    name = "npu-split-activations"
    Options = SplitActivationsOptions
    lossless = True

    def run(self, program: Program, options: SplitActivationsOptions,
            context: PassContext) -> PassResult:
        graph = program.graph
        split = 0
        for node in list(program.nodes("call_function")):
            base = _base(node)
            if base not in ("conv_act", "linear_act"):
                continue
            act = node.args[9] if base == "conv_act" else node.args[3]
            x, w = node.args[0], node.args[1]
            quantized = is_dequantize(x) and is_quantize(x.args[0]) and is_dequantize(w)
            if act in options.fusable or act not in _ACTIVATION_OPS or not quantized:
                continue
            op, extra = _ACTIVATION_OPS[act]
            with graph.inserting_before(node):
                if base == "conv_act":
                    layer = graph.call_function(torch.ops.aten.convolution.default,
                                                tuple(node.args[:9]))
                else:
                    layer = graph.call_function(torch.ops.aten.linear.default,
                                                tuple(node.args[:3]))
                y = graph.call_function(op, (layer, *extra))
            node.replace_all_uses_with(y)
            graph.erase_node(node)
            split += 1
        if not split:
            return PassResult(program, False, {"split": 0})
        graph.lint()
        program.graph_module.recompile()
        program.refresh_metadata()
        return PassResult(program, True, {"split": split})
