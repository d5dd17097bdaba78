"""Which nodes TensorRT runs, and how: the ONNX operator support table, and the per-node
placement report (INT8 / INT4 weight-only / float, each float layer with its reason).

The table is onnx-tensorrt's ``docs/operators.md`` (checked against the TensorRT 8.4 edition
in the repository: "TensorRT 8.4 supports operators up to Opset 13") plus the operators later
TensorRT releases added, each with the first TensorRT version that parses it
(``ADDED_IN``: from the TensorRT 8.5 / 8.6 / 10.x release notes and support matrices; rows
marked unverified were not found in the corpus and are kept conservative). An operator
absent from both is refused for every version.
"""

from __future__ import annotations

from typing import Any

# onnx-tensorrt operators.md, TensorRT 8.4 edition, rows marked "Y".
SUPPORTED_8_4 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
Min Mul Neg NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomUniform RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh
Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where Xor
""".split())

# Operators added after 8.4: (first TensorRT "major.minor", verified?)
ADDED_IN: dict[str, tuple[str, bool]] = {
    "HardSwish": ("8.5", False), "Mod": ("8.5", False), "NonZero": ("8.5", False),
    "OneHot": ("8.5", False), "Reciprocal": ("8.5", False), "RoiAlign": ("8.5", False),
    "Trilu": ("8.5", False), "IsInf": ("8.5", False), "Shrink": ("8.5", False),
    "LayerNormalization": ("8.6", False), "GridSample": ("8.6", False),
    "CastLike": ("10.0", False), "GroupNormalization": ("10.0", False),
    "Gelu": ("10.0", False), "BitwiseAnd": ("10.0", False), "BitwiseOr": ("10.0", False),
    "BitwiseNot": ("10.0", False), "BitwiseXor": ("10.0", False),
    "STFT": ("10.5", False), "Attention": ("10.13", False),
    "RMSNormalization": ("10.13", False),
}

CHECKED_AGAINST = ("onnx-tensorrt docs/operators.md (TensorRT 8.4 edition); later rows from "
                   "release notes, unverified: " + ", ".join(sorted(ADDED_IN)))


def _version(v: str) -> tuple[int, int]:
    major, minor = v.split(".")[:2]
    return int(major), int(minor)


def operator_support(op_type: str, tensorrt: str) -> str:
    """'' when TensorRT ``tensorrt`` parses ``op_type``, else the reason it does not."""
    if op_type in SUPPORTED_8_4:
        return ""
    if op_type in ADDED_IN:
        first, _ = ADDED_IN[op_type]
        if _version(tensorrt) >= _version(first):
            return ""
        return f"TensorRT {tensorrt} cannot parse {op_type} (added in TensorRT {first})"
    return f"{op_type} is not in TensorRT's ONNX operator support table"


def placement_report(model: Any, float_layers: dict[str, str]) -> dict[str, Any]:
    """What runs in which precision in the written model: per weighted node, the weight's
    format (from its DequantizeLinear), and the float layers with their reasons."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    names = {TensorProto.INT8: "int8", TensorProto.INT4: "int4",
             TensorProto.FLOAT8E4M3FN: "fp8"}
    layers: dict[str, str] = {}
    counts: dict[str, int] = {}
    unweighted: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        w = producer.get(node.input[1]) if len(node.input) > 1 else None
        x = producer.get(node.input[0])
        if w is not None and w.op_type == "DequantizeLinear" and w.input[0] in inits:
            fmt = names.get(inits[w.input[0]].data_type, "?")
            act = x is not None and x.op_type == "DequantizeLinear"
            kind = f"{fmt} weights, {fmt} activations" if act else f"{fmt} weight-only"
        else:
            kind = "float"
            if node.input[1] not in inits and (w is None or w.op_type != "Constant"):
                # Q K^T and P V of attention: both operands are activations
                unweighted[node.name] = ("activation x activation MatMul (attention): "
                                         "edgecc quantizes layers with stored weights only")
        layers[node.name] = kind
        counts[kind] = counts.get(kind, 0) + 1
    return {"layers": layers, "counts": counts,
            "float_reasons": {**float_layers, **unweighted}}
