"""The whole model as one int8 TFLite graph, for Vela to partition itself (the peer of
edgecc's BYOC partition in ``bench/npu.py``).

After ``byoc.partition`` the Relax ``main`` is the NPU regions (``call_dps_packed``) joined
by CPU ops. Where those CPU ops have an int8 TFLite form edgecc writes — the model input's
quantize (the TFLite model takes int8), a global mean (``dequantize -> mean(H, W) ->
quantize``: TFLite ``MEAN``), a max / average pool of a dequantized value (``MAX_POOL_2D`` /
``AVERAGE_POOL_2D`` on the int8 tensor, same quantization), a flatten of a 4-D value
(``TRANSPOSE`` NHWC -> NCHW, then ``RESHAPE``: PyTorch's element order), a quantize of a
dequantized value to other parameters (``QUANTIZE`` int8 -> int8), the output's dequantize
(the model returns int8) — the regions are inlined into one ``Region`` with those ops between
them; ``tflite_writer`` writes it and Vela decides what runs on the NPU. Anything else (layer
norm, GELU, an embedding gather, ...) has no TFLite writer in edgecc: ``whole_model_region``
returns the reason instead.
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


def _pool(call: Any, op: str, x: str, tensors: dict[str, TensorSpec],
          ops: list[RegionOp]) -> str:
    """Append the int8 pool ``call`` computes (NCHW, on the dequantized ``x``) to ``ops``,
    with ``x``'s quantization (max pooling commutes with dequantize; TFLite's int8 average
    pool keeps it too); "" or why it has no TFLite form."""
    from edgecc.targets.npu.region import conv_output_size, same_padding

    a = call.attrs
    if str(a.layout) != "NCHW" or bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation):
        return f"{op} with layout {a.layout}, ceil_mode or dilation has no TFLite form"
    n, h, w, c = tensors[x].shape
    (kh, kw), (sh, sw) = (int(k) for k in a.pool_size), (int(k) for k in a.strides)
    pads = tuple(int(p) for p in a.padding)
    if pads == (0, 0, 0, 0):
        padding = "VALID"
    elif (pads[0], pads[2]) == same_padding(h, kh, sh, 1) and \
            (pads[1], pads[3]) == same_padding(w, kw, sw, 1):
        padding = "SAME"
    else:
        return f"{op} with padding {list(pads)} that TFLite's SAME / VALID do not express"
    if op == "relax.nn.avg_pool2d" and padding == "SAME" and bool(a.count_include_pad):
        return "average pool counting its padding (TFLite's excludes it)"
    kind = "max_pool2d" if op == "relax.nn.max_pool2d" else "avg_pool2d"
    y = f"{kind}_{len(tensors)}"
    shape = (n, conv_output_size(h, kh, sh, 1, padding), conv_output_size(w, kw, sw, 1, padding),
             c)
    tensors[y] = TensorSpec(y, shape, "int8", tensors[x].quant)
    ops.append(RegionOp(kind, (x,), (y,), {"kernel": (kh, kw), "stride": (sh, sw),
                                           "padding": padding, "activation": "NONE"}))
    return ""


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
            if src in floats and floats[src][0] == "dq":  # int8 -> int8 requantize
                x = floats[src][1]
                if tensors[x].quant == Quant((s,), (z,)):
                    names[b.var] = x
                    continue
                y = f"requant_{len(tensors)}"
                tensors[y] = TensorSpec(y, tensors[x].shape, "int8", Quant((s,), (z,)))
                ops.append(RegionOp("quantize", (x,), (y,), {}))
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
        if (op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d") and v.args[0] in floats
                and floats[v.args[0]][0] == "dq"):
            why = _pool(v, op, floats[v.args[0]][1], tensors, ops)
            if why:
                return None, why
            floats[b.var] = ("dq", ops[-1].outputs[0])
            continue
        if (op in ("relax.reshape", "relax.flatten") and v.args[0] in floats
                and floats[v.args[0]][0] == "dq" and len(tensors[floats[v.args[0]][1]].shape)
                == 4 and len(b.var.ty.shape) == 2):  # NCHW flatten: NHWC -> NCHW, reshape
            x = floats[v.args[0]][1]
            n, h, w, c = tensors[x].shape
            q = tensors[x].quant
            perm, t = f"perm_{len(tensors)}", f"nchw_{len(tensors)}"
            tensors[perm] = TensorSpec(perm, (4,), "int32", data=np.array([0, 3, 1, 2],
                                                                           np.int32))
            tensors[t] = TensorSpec(t, (n, c, h, w), "int8", q)
            ops.append(RegionOp("transpose", (x, perm), (t,), {"perm": (0, 3, 1, 2)}))
            shape = tuple(int(d) for d in b.var.ty.shape)
            sh, y = f"shape_{len(tensors)}", f"flat_{len(tensors)}"
            tensors[sh] = TensorSpec(sh, (2,), "int32", data=np.asarray(shape, np.int32))
            tensors[y] = TensorSpec(y, shape, "int8", q)
            ops.append(RegionOp("reshape", (t, sh), (y,), {"new_shape": shape}))
            floats[b.var] = ("dq", y)
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
