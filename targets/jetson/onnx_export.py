"""A quantized edgecc program as the explicitly quantized ONNX TensorRT builds.

edgecc's quantization ops become ONNX ``QuantizeLinear`` / ``DequantizeLinear``:

* activations (``edgecc.quantize -> edgecc.dequantize``): a per-tensor Q/DQ pair with an fp32
  scale and an INT8 (or FP8) zero point of 0; a range narrower than the format
  (``narrow_range``: [-127, 127]) is a ``Clip`` before the quantize, which is exact;
* stored weights (``edgecc.dequantize`` of constants): an INT8 / INT4 / FP8 initializer
  feeding a ``DequantizeLinear`` directly (per-channel ``axis``; INT4 blocked, opset 21);
  a ``DequantizeLinear -> Transpose`` (how torch.onnx writes ``linear``) is folded into a
  transposed initializer so the DQ feeds the ``MatMul`` / ``Gemm`` on its output-channel axis
  (``axis=1`` of ``[K, N]``; INT4 blocks along ``K``: ``axis=0``), as ModelOpt writes it.

After export everything but Q/DQ is constant-folded (onnx-graphsurgeon), and the model is
converted down to the TensorRT's opset when it is below torch.onnx's 18.

Written for this target (the ``onnx`` target has a general QDQ writer of its own; targets do
not import each other): TensorRT needs only the symmetric subset, and a layout of its own.
"""

from __future__ import annotations

from typing import Any

import torch

from edgecc import stored_weights
from edgecc.logs import without_torchvision_notes
from edgecc.program import Program
from edgecc.quant import DEQUANTIZE, QUANTIZE, pack_int4, qformat, unpack_int4
from edgecc.stored_weights import StoredWeight

PLACEHOLDER = "edgecc_jetson_weight_"
_ONNX_TYPES = {"int8": 3, "int4": 22, "float8_e4m3fn": 17}  # TensorProto enum values


def extract_weights(program: Program) -> tuple[Program, list[StoredWeight]]:
    """A copy whose stored weights are float placeholders (replaced after export)."""
    exportable, weights, _ = stored_weights.extract_weights(program, PLACEHOLDER)
    return exportable, weights


def translation_table(opset: int) -> dict[Any, Any]:
    """onnxscript translations of the activation quantization ops."""
    import onnxscript

    op = getattr(onnxscript, f"opset{opset}")

    def q(x, scale, zero_point, axis, block_size, qmin, qmax, dtype):
        fmt = qformat(dtype)
        if not fmt.is_float and (qmin, qmax) != (fmt.qmin, fmt.qmax):
            lo = op.Mul(op.Constant(value_float=float(qmin)), scale)
            hi = op.Mul(op.Constant(value_float=float(qmax)), scale)
            x = op.Max(op.Min(x, hi), lo)
        zp = op.Cast(zero_point, to=_ONNX_TYPES[dtype])
        return op.QuantizeLinear(x, scale, zp, axis=axis)

    def dq(qx, scale, zero_point, axis, block_size, dtype):
        zp = op.Cast(zero_point, to=_ONNX_TYPES[dtype])
        return op.DequantizeLinear(qx, scale, zp, axis=axis)

    def quantize(x, scale, zero_point, axis: int, block_size: int, qmin: int, qmax: int,
                 dtype: str):
        return q(x, scale, zero_point, axis, block_size, qmin, qmax, dtype)

    def dequantize(qx, scale, zero_point, axis: int, block_size: int, dtype: str,
                   out_dtype: Any = None):
        return dq(qx, scale, zero_point, axis, block_size, dtype)

    return {QUANTIZE: quantize, DEQUANTIZE: dequantize}


def export(program: Program, opset: int) -> tuple[Any, int]:
    """The ONNX ``ModelProto`` of ``program`` and the number of stored weights."""
    import onnx

    exportable, weights = extract_weights(program)
    export_opset = max(opset, 18)
    with without_torchvision_notes():
        onnx_program = torch.onnx.export(
            exportable.export(), (), dynamo=True, opset_version=export_opset, verbose=False,
            input_names=[s.name for s in program.input_specs],
            output_names=[s.name for s in program.output_specs],
            custom_translation_table=translation_table(export_opset),
            optimize=False)
    model = _optimize(onnx_program.model_proto, {w.name for w in weights})
    _insert_weights(model, weights)
    model = _fold_constants(model)
    _fold_weight_transposes(model)
    if opset < export_opset:
        model = onnx.version_converter.convert_version(model, opset)
    return model, len(weights)


def _scale_tensor(w: StoredWeight, name: str) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(w.scale.float().contiguous().numpy(), name)


def _weight_tensors(w: StoredWeight, q: torch.Tensor, scale: torch.Tensor, name: str
                    ) -> tuple[Any, Any, Any]:
    """Initializers (data, scale, zero point) of ``q`` (unpacked values) in ``w.dtype``."""
    from onnx import helper, numpy_helper

    fmt = qformat(w.dtype)
    onnx_type = _ONNX_TYPES[w.dtype]
    if fmt.packed:
        packed = pack_int4(q.contiguous())
        data = helper.make_tensor(f"{name}_q", onnx_type, list(q.shape),
                                  packed.contiguous().numpy().tobytes(), raw=True)
        zp_shape = list(scale.shape)
        n = scale.numel()
        zp = helper.make_tensor(f"{name}_zp", onnx_type, zp_shape,
                                bytes((n + 1) // 2), raw=True)
    elif fmt.is_float:
        data = helper.make_tensor(f"{name}_q", onnx_type, list(q.shape),
                                  q.contiguous().view(torch.uint8).numpy().tobytes(), raw=True)
        zp = helper.make_tensor(f"{name}_zp", onnx_type, list(scale.shape),
                                bytes(scale.numel()), raw=True)
    else:
        data = numpy_helper.from_array(q.to(torch.int8).contiguous().numpy(), f"{name}_q")
        zp = numpy_helper.from_array(torch.zeros(scale.shape, dtype=torch.int8).numpy(),
                                     f"{name}_zp")
    sc = numpy_helper.from_array(scale.float().contiguous().numpy(), f"{name}_scale")
    return data, sc, zp


def _insert_weights(model: Any, weights: list[StoredWeight]) -> None:
    """Replace each float placeholder by stored data -> ``DequantizeLinear``."""
    from onnx import helper

    by_name = {w.name: w for w in weights}
    keep, nodes = [], []
    for init in model.graph.initializer:
        w = by_name.pop(init.name, None)
        if w is None:
            keep.append(init)
            continue
        if bool((w.zero_point != 0).any()):
            raise ValueError(f"weight {w.name} has a non-zero zero point (TensorRT is "
                             "symmetric only)")
        data, scale, zp = _weight_tensors(w, w.values, w.scale, w.name)
        keep += [data, scale, zp]
        attrs: dict[str, Any] = {}
        if w.scale.dim() > 0:
            attrs["axis"] = w.axis
        if w.block_size:
            # one block longer than the axis is the whole axis: write it as such (K = 64
            # with block 128 -> block_size 64), the same numbers in the shape TensorRT expects
            attrs["block_size"] = min(w.block_size, int(w.logical_shape[w.axis]))
        nodes.append(helper.make_node("DequantizeLinear", [data.name, scale.name, zp.name],
                                      [w.name], name=f"{w.name}_dq", **attrs))
    if by_name:
        raise RuntimeError(f"placeholders not found in the exported model: {sorted(by_name)}")
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    old = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + old)


def _optimize(model: Any, keep: set[str]) -> Any:
    """onnxscript's optimizer (constant folding, CastLike/Identity removal) with the weight
    placeholders held as graph inputs, so it cannot fold them into new float tensors."""
    import onnx
    import onnxscript.optimizer

    held = [i for i in model.graph.initializer if i.name in keep]
    for init in held:
        model.graph.initializer.remove(init)
        model.graph.input.append(onnx.helper.make_tensor_value_info(
            init.name, init.data_type, list(init.dims)))
    model = onnxscript.optimizer.optimize(model)
    inputs = [i for i in model.graph.input if i.name not in keep]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.extend(held)
    return model


def _fold_constants(model: Any) -> Any:
    """Constant-fold everything except Q/DQ (onnx-graphsurgeon, onnxruntime evaluates)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.fold_constants(
        should_exclude_node=lambda n: n.op in ("QuantizeLinear", "DequantizeLinear"),
        error_ok=True)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.ir_version = model.ir_version
    return out


def _fold_weight_transposes(model: Any) -> None:
    """``DQ(W[N,K], axis 0) -> Transpose -> MatMul`` becomes ``DQ(W^T[K,N], axis 1) ->
    MatMul`` (blocked: ``axis 1 -> 0``), so the weight's DQ feeds the MatMul directly."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop = []
    for t in list(model.graph.node):
        if t.op_type != "Transpose":
            continue
        dq = producers.get(t.input[0])
        perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), None)
        if dq is None or dq.op_type != "DequantizeLinear" or perm != [1, 0] \
                or len(consumers.get(dq.output[0], [])) != 1 \
                or any(i not in inits for i in dq.input):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
        data = numpy_helper.to_array(inits[dq.input[0]])
        if data.ndim != 2:
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]])
        axis = attrs.get("axis", 1) % 2
        w = StoredWeight(dq.input[0][: -len("_q")] + "_t", torch.empty(0),
                         torch.from_numpy(scale.copy()), torch.zeros(1), axis,
                         attrs.get("block_size", 0), _dtype_of(inits[dq.input[0]].data_type))
        q = torch.from_numpy(_int_values(inits[dq.input[0]]).copy()).t().contiguous()
        new_scale = w.scale.t().contiguous() if w.scale.dim() == 2 else w.scale
        if w.scale.dim() > 0:
            attrs["axis"] = 1 - axis
        new_data, new_scale_t, new_zp = _weight_tensors(w, q, new_scale, w.name)
        for tensor in (new_data, new_scale_t, new_zp):
            model.graph.initializer.append(tensor)
        for name in dq.input:
            model.graph.initializer.remove(inits[name])
        del dq.input[:]
        dq.input.extend([new_data.name, new_scale_t.name, new_zp.name])
        del dq.attribute[:]
        dq.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
        # the Transpose's consumers read the DQ directly
        for n in consumers.get(t.output[0], []):
            for i, name in enumerate(n.input):
                if name == t.output[0]:
                    n.input[i] = dq.output[0]
        for i, o in enumerate(model.graph.output):
            if o.name == t.output[0]:
                raise RuntimeError("a transposed weight is a graph output")
        drop.append(t)
    for t in drop:
        model.graph.node.remove(t)


def _dtype_of(onnx_type: int) -> str:
    return {v: k for k, v in _ONNX_TYPES.items()}[onnx_type]


def _int_values(tensor: Any) -> Any:
    """An initializer's values as numpy (INT4: unpacked int8; FP8: uint8 bit patterns)."""
    import numpy as np
    from onnx import numpy_helper

    if tensor.data_type == _ONNX_TYPES["int4"]:
        raw = np.frombuffer(tensor.raw_data, dtype=np.uint8)
        packed = torch.from_numpy(raw.copy())
        vals = unpack_int4(packed, True)[: int(np.prod(tensor.dims))]
        return vals.to(torch.int16).numpy().reshape(tuple(tensor.dims))
    if tensor.data_type == _ONNX_TYPES["float8_e4m3fn"]:
        raw = np.frombuffer(tensor.raw_data, dtype=np.uint8).reshape(tuple(tensor.dims))
        return raw
    return numpy_helper.to_array(tensor)
