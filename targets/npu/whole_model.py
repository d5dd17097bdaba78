"""The whole model as one int8 TFLite graph, for Vela to partition itself (the peer of
edgecc's BYOC partition in ``bench/npu.py``).

After ``byoc.partition`` the Relax ``main`` is the NPU regions (``call_dps_packed``) joined
by CPU ops. Where those CPU ops have an int8 TFLite form edgecc writes — the model input's
quantize (the TFLite model takes int8), a global mean (``dequantize -> mean(H, W) ->
quantize``: TFLite ``MEAN``), the output's dequantize (the model returns int8) — the regions
are inlined into one ``Region`` with those ops between them; ``tflite_writer`` writes it and
Vela decides what runs on the NPU. Anything else (layer norm, softmax, GELU, ...) has no
TFLite writer in edgecc: ``whole_model_region`` returns the reason instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecc.targets.npu.region import Quant, Region, RegionOp, TensorSpec


def _op_name(call: Any) -> str:
    return str(getattr(call.op, "name", call.op))


def _qparams(call: Any) -> tuple[float, int]:
    return (float(call.args[1].value.numpy().reshape(-1)[0]),
            int(call.args[2].value.numpy().reshape(-1)[0]))


def whole_model_region(main: Any, regions: dict[str, Region]) -> tuple[Region | None, str]:
    """``main`` (a Relax function after ``RunCodegen``) with ``regions`` (by symbol) as one
    region, or (None, why it cannot be written)."""
    from tvm import relax

    tensors: dict[str, TensorSpec] = {}
    ops: list[RegionOp] = []
    inputs: list[str] = []
    names: dict[Any, str] = {}  # int8 Relax var -> region tensor
    floats: dict[Any, tuple[str, Any]] = {}  # float var -> (kind, payload)
    bindings = [b for block in main.body.blocks for b in block.bindings]
    for b in bindings:
        v = b.value
        if isinstance(v, relax.Tuple):
            floats[b.var] = ("tuple", list(v.fields))
            continue
        if not isinstance(v, relax.Call):
            return None, f"binding {type(v).__name__} in main"
        op = _op_name(v)
        if op == "relax.quantize":
            src = v.args[0]
            s, z = _qparams(v)
            if src in floats and floats[src][0] == "mean":
                x = floats[src][1]
                n, _, _, c = tensors[x].shape
                axis = f"axis_{len(tensors)}"
                tensors[axis] = TensorSpec(axis, (2,), "int32", data=np.array([1, 2], np.int32))
                y = f"mean_{len(tensors)}"
                tensors[y] = TensorSpec(y, (n, c), "int8", Quant((s,), (z,)))
                ops.append(RegionOp("mean", (x, axis), (y,), {"keep_dims": False}))
                names[b.var] = y
                continue
            if src in set(main.params):
                shape = tuple(int(d) for d in src.ty.shape)
                shape = (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape
                name = f"input{len(inputs)}"
                tensors[name] = TensorSpec(name, shape, "int8", Quant((s,), (z,)))
                inputs.append(name)
                names[b.var] = name
                continue
            return None, "a quantize of a value the CPU computed in float"
        if op == "relax.dequantize" and v.args[0] in names:
            floats[b.var] = ("dq", names[v.args[0]])
            continue
        if op == "relax.mean" and v.args[0] in floats and floats[v.args[0]][0] == "dq":
            x = floats[v.args[0]][1]
            axes = sorted(int(a) % 4 for a in v.attrs.axis)
            if len(tensors[x].shape) != 4 or axes != [2, 3]:
                return None, "a mean other than over H and W"
            floats[b.var] = ("mean_keepdims" if v.attrs.keepdims else "mean", x)
            continue
        if (op in ("relax.reshape", "relax.flatten") and v.args[0] in floats
                and floats[v.args[0]][0] == "mean_keepdims"
                and len(b.var.ty.shape) == 2):  # (N, C, 1, 1) -> (N, C): MEAN without keepdims
            floats[b.var] = ("mean", floats[v.args[0]][1])
            continue
        if op == "relax.call_dps_packed":
            symbol = str(v.args[0].global_symbol)
            region = regions[symbol]
            args = list(v.args[1].fields)
            if any(a not in names for a in args):
                return None, f"region {symbol} reads a value with no int8 TFLite form"
            rename = {n: names[a] for n, a in zip(region.inputs, args)}
            for t in region.tensors.values():
                if t.name not in rename:
                    rename[t.name] = f"{symbol}/{t.name}"
                    tensors[rename[t.name]] = TensorSpec(rename[t.name], t.shape, t.dtype,
                                                         t.quant, t.data)
            for o in region.ops:
                ops.append(RegionOp(o.kind, tuple(rename[i] for i in o.inputs),
                                    tuple(rename[i] for i in o.outputs), o.attrs))
            if len(region.outputs) != 1:
                return None, f"region {symbol} has several outputs"
            names[b.var] = rename[region.outputs[0]]
            continue
        return None, f"{op} between the NPU regions has no TFLite writer in edgecc"
    result = main.body.body
    fields = floats.get(result, ("tuple", [result]))[1] if result in floats else [result]
    outputs = []
    for f in fields:
        if f in floats and floats[f][0] == "dq":
            outputs.append(floats[f][1])
        elif f in names:
            outputs.append(names[f])
        else:
            return None, "an output computed in float on the CPU"
    return Region("whole_model", tensors, tuple(ops), tuple(inputs), tuple(outputs)), ""
