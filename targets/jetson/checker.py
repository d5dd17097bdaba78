"""edgecc's TensorRT-rules checker: what TensorRT would refuse in an explicitly quantized ONNX.

Rules (TensorRT ``IQuantizeLayer`` / ``IDequantizeLayer``, "Explicit Quantization" and
"Working with Quantized Types"; failures seen in NVIDIA/TensorRT#994, #3006, #4542, #2163 and
onnx/tensorflow-onnx#1713):

* zero points are all 0 ("TRT only supports symmetric quantization");
* a Q/DQ's data is INT8, INT4 (weights only) or FP8 -- not INT32 or UINT8 (a QuantizeLinear
  without a zero point outputs UINT8);
* scales are positive constants: a scalar (per-tensor), 1-D of the axis length
  (per-channel), or of the input's rank (blocked);
* activations are per-tensor; per-channel scales only on weights;
* integer weights feed a DequantizeLinear directly; biases stay float;
* FP8 needs a device with FP8 (Thor), INT4 TensorRT >= 10;
* every operator is in TensorRT's ONNX support table for the TensorRT version
  (``partition.py``).

:func:`check` returns the problems, each naming the node; the target fails the compile on
any.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgecc.targets.jetson.partition import operator_support


@dataclasses.dataclass(frozen=True)
class Problem:
    node: str
    op: str
    rule: str
    fix: str

    def __str__(self) -> str:
        return f"node '{self.node}' ({self.op}): {self.rule}; {self.fix}"


def check(model: Any, *, tensorrt: str, fp8: bool) -> list[Problem]:
    """Everything in ``model`` TensorRT ``tensorrt`` would refuse (empty: none)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    tensors = {**consts, **inits}
    producer = {o: n for n in graph.node for o in n.output}
    shapes: dict[str, list[int | None]] = {}
    for vi in (*graph.value_info, *graph.input, *graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for name, t in tensors.items():
        shapes[name] = list(t.dims)
    problems: list[Problem] = []
    major = int(tensorrt.split(".")[0])
    quant_types = {TensorProto.INT8: "INT8", TensorProto.INT4: "INT4",
                   TensorProto.FLOAT8E4M3FN: "FP8"}

    def add(node: Any, rule: str, fix: str) -> None:
        problems.append(Problem(node.name or node.output[0], node.op_type, rule, fix))

    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            add(node, f"custom-domain operator '{node.domain}'",
                "TensorRT needs a plugin for it; keep the model in standard ONNX")
            continue
        why = operator_support(node.op_type, tensorrt)
        if why:
            add(node, why, "exclude the layer producing it or pick a newer JetPack")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2:
                b = producer.get(node.input[2])
                if b is not None and b.op_type == "DequantizeLinear":
                    add(node, "quantized bias", "keep biases float (TensorRT quantizes "
                        "them itself)")
            for i in node.input:
                t = inits.get(i)
                if t is not None and t.data_type in (*quant_types, TensorProto.INT32,
                                                     TensorProto.UINT8) \
                        and node.op_type not in ("Reshape", "Slice", "Gather", "Expand",
                                                 "Tile", "ConstantOfShape", "Range",
                                                 "Squeeze", "Unsqueeze", "Pad", "Resize",
                                                 "Split", "TopK", "CumSum", "OneHot") \
                        and t.data_type != TensorProto.INT32:
                    add(node, f"integer weight '{i}' does not feed a DequantizeLinear",
                        "store weights as INT8/INT4 data -> DequantizeLinear -> the op")
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        axis = attrs.get("axis", 1)
        block = attrs.get("block_size", 0)
        data, scale_name = node.input[0], node.input[1]
        zp_name = node.input[2] if len(node.input) > 2 else ""
        # element type of the quantized side
        if node.op_type == "QuantizeLinear":
            qtype = tensors[zp_name].data_type if zp_name in tensors else TensorProto.UINT8
        else:
            qtype = tensors[data].data_type if data in tensors else (
                tensors[zp_name].data_type if zp_name in tensors else None)
        if qtype is not None and qtype not in quant_types:
            name = TensorProto.DataType.Name(qtype)
            add(node, f"{name} quantization (TensorRT runs INT8, INT4 weights, FP8)",
                "quantize to int8 with a zero point of type INT8")
        if qtype == TensorProto.FLOAT8E4M3FN and not fp8:
            add(node, "FP8 on a device without FP8 tensor cores", "use precision=int8, or "
                "device=agx-thor")
        if qtype == TensorProto.INT4 and major < 10:
            add(node, f"INT4 needs TensorRT >= 10 (this JetPack has {tensorrt})",
                "use a JetPack with TensorRT 10")
        if zp_name:
            if zp_name not in tensors:
                add(node, "zero point is not a constant", "use a constant zero point of 0")
            else:
                zp = tensors[zp_name]
                raw = zp.raw_data if zp.raw_data else None
                nonzero = any(raw) if raw is not None else bool(
                    np.any(numpy_helper.to_array(zp) != 0))
                if nonzero:
                    add(node, "non-zero zero point (TensorRT is symmetric only)",
                        "quantize symmetrically (zero point 0)")
        if scale_name not in tensors:
            add(node, "scale is not a constant", "use constant, calibrated scales")
            continue
        scale = numpy_helper.to_array(tensors[scale_name])
        if scale.size and not bool(np.all(scale > 0)):
            add(node, "scale <= 0", "recalibrate: every scale must be positive")
        weight = data in tensors or (
            node.op_type == "QuantizeLinear" and data in tensors)
        in_shape = shapes.get(data)
        if scale.ndim == 0 or scale.size == 1 and scale.ndim <= 1 and not block:
            continue  # per-tensor
        if not weight:
            add(node, f"per-channel activation scales ({scale.size} scales)",
                "quantize activations per tensor (one scale)")
            continue
        if in_shape is None:
            continue
        rank = len(in_shape)
        ax = axis % rank if rank else 0
        if block:
            expect = list(in_shape)
            expect[ax] = -(-in_shape[ax] // block)
            if list(scale.shape) != expect:
                add(node, f"blocked scale shape {list(scale.shape)} does not match input "
                    f"{in_shape} with block_size {block} on axis {ax}",
                    "give one scale per block")
            if ax not in (rank - 1, rank - 2):
                add(node, "blocked quantization on an axis other than the last two",
                    "block along the reduction axis of the weight")
        elif scale.ndim != 1 or scale.size != in_shape[ax]:
            add(node, f"{scale.size} scales for axis {ax} of length {in_shape[ax]}",
                "per-channel scales need one scale per output channel on the right axis "
                "(Conv 0, ConvTranspose 1, MatMul weight [K, N] 1)")
    return problems
