"""Write an NPU region as an int8 TFLite flatbuffer (no TensorFlow).

The flatbuffer is built with ``flatbuffers`` and the TFLite schema classes that ship inside the
Vela package (``ethosu.vela.tflite``), so the file Vela compiles and the file the LiteRT
interpreter checks the simulator against are the same bytes. Activations are int8 per-tensor,
weights int8 symmetric (per-channel on ``quantized_dimension``), bias int32.
"""

from __future__ import annotations

import numpy as np

from edgecc.targets.npu.region import Region, RegionOp, TensorSpec

# op kind -> (BuiltinOperator name, operator version for int8 per-channel, options table)
_BUILTINS = {
    "conv2d": ("CONV_2D", 3, "Conv2DOptions"),
    "depthwise_conv2d": ("DEPTHWISE_CONV_2D", 3, "DepthwiseConv2DOptions"),
    "fully_connected": ("FULLY_CONNECTED", 4, "FullyConnectedOptions"),
    "batch_matmul": ("BATCH_MATMUL", 2, "BatchMatMulOptions"),
    "add": ("ADD", 2, "AddOptions"),
    "mul": ("MUL", 2, "MulOptions"),
    "avg_pool2d": ("AVERAGE_POOL_2D", 2, "Pool2DOptions"),
    "max_pool2d": ("MAX_POOL_2D", 2, "Pool2DOptions"),
    "reshape": ("RESHAPE", 1, "ReshapeOptions"),
    "pad": ("PAD", 2, "PadOptions"),
    "mean": ("MEAN", 2, "ReducerOptions"),
    "transpose": ("TRANSPOSE", 2, "TransposeOptions"),
    "quantize": ("QUANTIZE", 2, "QuantizeOptions"),
    "concat": ("CONCATENATION", 2, "ConcatenationOptions"),
    "strided_slice": ("STRIDED_SLICE", 2, "StridedSliceOptions"),
    "softmax": ("SOFTMAX", 2, "SoftmaxOptions"),
    "logistic": ("LOGISTIC", 2, None),
    "tanh": ("TANH", 2, None),
    "hard_swish": ("HARD_SWISH", 1, "HardSwishOptions"),
    "leaky_relu": ("LEAKY_RELU", 2, "LeakyReluOptions"),
    "gelu": ("GELU", 1, "GeluOptions"),
    # float32 CPU ops of a mixed whole-model graph (whole_model.mixed_whole_model_region)
    "sub": ("SUB", 1, "SubOptions"),
    "div": ("DIV", 1, "DivOptions"),
    "rsqrt": ("RSQRT", 1, None),
    "gather": ("GATHER", 1, "GatherOptions"),
    "cast": ("CAST", 1, None),
    "dequantize": ("DEQUANTIZE", 2, None),
}
_TYPES = {"int8": "INT8", "int32": "INT32", "float32": "FLOAT32", "bool": "BOOL"}


def builtin_name(kind: str) -> str:
    """The TFLite builtin operator a region op kind is written as."""
    return _BUILTINS[kind][0]


class _Schema:
    """``ethosu.vela.tflite.<Table>`` modules, imported on first use."""

    def __getattr__(self, table: str):
        import importlib

        return importlib.import_module(f"ethosu.vela.tflite.{table}")


class _Writer:
    def __init__(self, region: Region):
        import flatbuffers

        self.region = region
        self.s = _Schema()
        self.b = flatbuffers.Builder(1024)
        self.names = list(region.tensors)
        self.index = {n: i for i, n in enumerate(self.names)}

    # vectors ---------------------------------------------------------------------------
    def ints(self, values) -> int:
        return self.b.CreateNumpyVector(np.asarray(values, np.int32))

    def longs(self, values) -> int:
        return self.b.CreateNumpyVector(np.asarray(values, np.int64))

    def floats(self, values) -> int:
        return self.b.CreateNumpyVector(np.asarray(values, np.float32))

    def offsets(self, start_vector, offsets) -> int:
        start_vector(self.b, len(offsets))
        for o in reversed(offsets):
            self.b.PrependUOffsetTRelative(o)
        return self.b.EndVector()

    # tables ----------------------------------------------------------------------------
    def quantization(self, spec: TensorSpec) -> int | None:
        if spec.quant is None:
            return None
        QP = self.s.QuantizationParameters
        scale, zp = self.floats(spec.quant.scale), self.longs(spec.quant.zero_point)
        QP.QuantizationParametersStart(self.b)
        QP.QuantizationParametersAddScale(self.b, scale)
        QP.QuantizationParametersAddZeroPoint(self.b, zp)
        QP.QuantizationParametersAddQuantizedDimension(self.b, spec.quant.axis)
        return QP.QuantizationParametersEnd(self.b)

    def tensor(self, spec: TensorSpec, buffer: int) -> int:
        T = self.s.Tensor
        name = self.b.CreateString(spec.name)
        shape = self.ints(spec.shape)
        quant = self.quantization(spec)
        T.TensorStart(self.b)
        T.TensorAddShape(self.b, shape)
        T.TensorAddType(self.b, getattr(self.s.TensorType.TensorType, _TYPES[spec.dtype]))
        T.TensorAddBuffer(self.b, buffer)
        T.TensorAddName(self.b, name)
        if quant is not None:
            T.TensorAddQuantization(self.b, quant)
        return T.TensorEnd(self.b)

    def buffer(self, data: np.ndarray | None) -> int:
        B = self.s.Buffer
        vec = None
        if data is not None:
            raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
            self.b.StartVector(1, raw.size, 16)  # 16-byte aligned constant data
            self.b.head -= raw.size
            self.b.Bytes[self.b.head:self.b.head + raw.size] = raw.tobytes()
            vec = self.b.EndVector()
        B.BufferStart(self.b)
        if vec is not None:
            B.BufferAddData(self.b, vec)
        return B.BufferEnd(self.b)

    def options(self, op: RegionOp) -> tuple[int, int]:
        s, b, a = self.s, self.b, op.attrs
        _, _, table = _BUILTINS[op.kind]
        if table is None:
            return s.BuiltinOptions.BuiltinOptions.NONE, 0
        act = getattr(s.ActivationFunctionType.ActivationFunctionType,
                      a.get("activation", "NONE"))
        pad = getattr(s.Padding.Padding, a.get("padding", "VALID"))
        opt_type = getattr(s.BuiltinOptions.BuiltinOptions, table)
        if op.kind == "pad":
            s.PadOptions.PadOptionsStart(b)
            return opt_type, s.PadOptions.PadOptionsEnd(b)
        if op.kind == "leaky_relu":
            s.LeakyReluOptions.LeakyReluOptionsStart(b)
            s.LeakyReluOptions.LeakyReluOptionsAddAlpha(b, float(a["alpha"]))
            return opt_type, s.LeakyReluOptions.LeakyReluOptionsEnd(b)
        if op.kind == "gelu":
            s.GeluOptions.GeluOptionsStart(b)
            s.GeluOptions.GeluOptionsAddApproximate(b, bool(a.get("approximate", False)))
            return opt_type, s.GeluOptions.GeluOptionsEnd(b)
        if op.kind in ("transpose", "quantize", "strided_slice", "hard_swish"):  # all in the inputs
            mod = getattr(s, table)
            getattr(mod, f"{table}Start")(b)
            return opt_type, getattr(mod, f"{table}End")(b)
        if op.kind == "concat":
            s.ConcatenationOptions.ConcatenationOptionsStart(b)
            s.ConcatenationOptions.ConcatenationOptionsAddAxis(b, a["axis"])
            s.ConcatenationOptions.ConcatenationOptionsAddFusedActivationFunction(b, act)
            return opt_type, s.ConcatenationOptions.ConcatenationOptionsEnd(b)
        if op.kind == "gather":
            s.GatherOptions.GatherOptionsStart(b)
            s.GatherOptions.GatherOptionsAddAxis(b, int(a.get("axis", 0)))
            return opt_type, s.GatherOptions.GatherOptionsEnd(b)
        if op.kind == "softmax":
            s.SoftmaxOptions.SoftmaxOptionsStart(b)
            s.SoftmaxOptions.SoftmaxOptionsAddBeta(b, float(a.get("beta", 1.0)))
            return opt_type, s.SoftmaxOptions.SoftmaxOptionsEnd(b)
        if op.kind == "batch_matmul":  # (B, M, K) x (B, K, N): no adjoint
            s.BatchMatMulOptions.BatchMatMulOptionsStart(b)
            return opt_type, s.BatchMatMulOptions.BatchMatMulOptionsEnd(b)
        if op.kind == "mean":
            s.ReducerOptions.ReducerOptionsStart(b)
            s.ReducerOptions.ReducerOptionsAddKeepDims(b, bool(a.get("keep_dims", False)))
            return opt_type, s.ReducerOptions.ReducerOptionsEnd(b)
        if op.kind == "reshape":
            new_shape = self.ints(a["new_shape"])
            s.ReshapeOptions.ReshapeOptionsStart(b)
            s.ReshapeOptions.ReshapeOptionsAddNewShape(b, new_shape)
            return opt_type, s.ReshapeOptions.ReshapeOptionsEnd(b)
        mod = getattr(s, table)
        getattr(mod, f"{table}Start")(b)
        if op.kind in ("conv2d", "depthwise_conv2d"):
            getattr(mod, f"{table}AddPadding")(b, pad)
            getattr(mod, f"{table}AddStrideH")(b, a["stride"][0])
            getattr(mod, f"{table}AddStrideW")(b, a["stride"][1])
            getattr(mod, f"{table}AddDilationHFactor")(b, a["dilation"][0])
            getattr(mod, f"{table}AddDilationWFactor")(b, a["dilation"][1])
            if op.kind == "depthwise_conv2d":
                mod.DepthwiseConv2DOptionsAddDepthMultiplier(b, a.get("depth_multiplier", 1))
        elif op.kind in ("avg_pool2d", "max_pool2d"):
            mod.Pool2DOptionsAddPadding(b, pad)
            mod.Pool2DOptionsAddStrideH(b, a["stride"][0])
            mod.Pool2DOptionsAddStrideW(b, a["stride"][1])
            mod.Pool2DOptionsAddFilterHeight(b, a["kernel"][0])
            mod.Pool2DOptionsAddFilterWidth(b, a["kernel"][1])
        getattr(mod, f"{table}AddFusedActivationFunction")(b, act)
        return opt_type, getattr(mod, f"{table}End")(b)

    def operator_code(self, kind: str) -> int:
        OC = self.s.OperatorCode
        name, version, _ = _BUILTINS[kind]
        code = getattr(self.s.BuiltinOperator.BuiltinOperator, name)
        OC.OperatorCodeStart(self.b)
        OC.OperatorCodeAddDeprecatedBuiltinCode(self.b, min(code, 127))
        OC.OperatorCodeAddBuiltinCode(self.b, code)
        OC.OperatorCodeAddVersion(self.b, version)
        return OC.OperatorCodeEnd(self.b)

    def operator(self, op: RegionOp, opcode_index: int) -> int:
        O = self.s.Operator
        inputs = self.ints([self.index[i] for i in op.inputs])
        outputs = self.ints([self.index[o] for o in op.outputs])
        opt_type, opts = self.options(op)
        O.OperatorStart(self.b)
        O.OperatorAddOpcodeIndex(self.b, opcode_index)
        O.OperatorAddInputs(self.b, inputs)
        O.OperatorAddOutputs(self.b, outputs)
        if opts:
            O.OperatorAddBuiltinOptionsType(self.b, opt_type)
            O.OperatorAddBuiltinOptions(self.b, opts)
        return O.OperatorEnd(self.b)

    def model(self) -> bytes:
        s, b, r = self.s, self.b, self.region
        # buffer 0 is the empty buffer every non-constant tensor points at
        buffers = [self.buffer(None)]
        tensor_buffer = {}
        for n in self.names:
            spec = r.tensors[n]
            if spec.is_constant:
                tensor_buffer[n] = len(buffers)
                buffers.append(self.buffer(spec.data))
            else:
                tensor_buffer[n] = 0
        tensors = [self.tensor(r.tensors[n], tensor_buffer[n]) for n in self.names]
        kinds = list(dict.fromkeys(op.kind for op in r.ops))
        operators = [self.operator(op, kinds.index(op.kind)) for op in r.ops]
        codes = [self.operator_code(k) for k in kinds]

        SG, M = s.SubGraph, s.Model
        sg_tensors = self.offsets(SG.SubGraphStartTensorsVector, tensors)
        sg_inputs = self.ints([self.index[i] for i in r.inputs])
        sg_outputs = self.ints([self.index[o] for o in r.outputs])
        sg_ops = self.offsets(SG.SubGraphStartOperatorsVector, operators)
        sg_name = b.CreateString(r.name)
        SG.SubGraphStart(b)
        SG.SubGraphAddTensors(b, sg_tensors)
        SG.SubGraphAddInputs(b, sg_inputs)
        SG.SubGraphAddOutputs(b, sg_outputs)
        SG.SubGraphAddOperators(b, sg_ops)
        SG.SubGraphAddName(b, sg_name)
        subgraph = SG.SubGraphEnd(b)

        m_codes = self.offsets(M.ModelStartOperatorCodesVector, codes)
        m_subgraphs = self.offsets(M.ModelStartSubgraphsVector, [subgraph])
        m_buffers = self.offsets(M.ModelStartBuffersVector, buffers)
        description = b.CreateString(f"edgecc NPU region {r.name}")
        M.ModelStart(b)
        M.ModelAddVersion(b, 3)
        M.ModelAddOperatorCodes(b, m_codes)
        M.ModelAddSubgraphs(b, m_subgraphs)
        M.ModelAddDescription(b, description)
        M.ModelAddBuffers(b, m_buffers)
        b.Finish(M.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def write_tflite(region: Region) -> bytes:
    """The region as a ``.tflite`` flatbuffer (bytes)."""
    for op in region.ops:
        if op.kind not in _BUILTINS:
            raise NotImplementedError(f"TFLite writer: no builtin for region op {op.kind!r}")
    return _Writer(region).model()
