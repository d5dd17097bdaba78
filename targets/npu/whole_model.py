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
norm, GELU, an embedding gather, ...) has no int8 TFLite writer in edgecc:
``whole_model_region`` returns the reason instead.

For transformers, ``mixed_whole_model_region`` writes those CPU ops as float32 TFLite builtins
(``DEQUANTIZE -> RESHAPE / TRANSPOSE / ADD / MUL / layer norm -> QUANTIZE`` between int8
regions; the embedding ``take`` as float ``GATHER``), after ``fold_fixed_inputs`` has bound
inputs such as the attention mask to fixed values and the int64 / bool code that depends only
on them (``arange``, ``where``, ``bitwise_and``, ``index_tensor``, ...) is evaluated to
constants. The graph is exact for that fixed mask only::

    lv = R.take(tok_table, ids)  ...  R.nn.layer_norm(lv, g, b)  ->  q = R.quantize(...)
    ->  GATHER(table, ids:int32) ... MEAN, SUB, MUL, MEAN, ADD eps, RSQRT, MUL, MUL g, ADD b,
        QUANTIZE  ->  int8 region ops  ->  DEQUANTIZE ...
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


def _inline_region(symbol: str, region: Region, args: list[str],
                   tensors: dict[str, TensorSpec], ops: list[RegionOp]) -> str | None:
    """Append ``region``'s tensors and ops (its inputs renamed to ``args``, its own tensors
    prefixed with ``symbol``) to the whole model's; its one output's name, None if several."""
    rename = dict(zip(region.inputs, args))
    for t in region.tensors.values():
        if t.name not in rename:
            rename[t.name] = f"{symbol}/{t.name}"
            tensors[rename[t.name]] = TensorSpec(rename[t.name], t.shape, t.dtype,
                                                 t.quant, t.data)
    for o in region.ops:
        ops.append(RegionOp(o.kind, tuple(rename[i] for i in o.inputs),
                            tuple(rename[i] for i in o.outputs), o.attrs))
    return rename[region.outputs[0]] if len(region.outputs) == 1 else None


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
            out = _inline_region(symbol, region, [names[a] for a in args], tensors, ops)
            if out is None:
                return None, f"region {symbol} has several outputs"
            names[b.var] = out
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


# -- mixed int8 / float32 whole model (transformers) ---------------------------------------

def fold_fixed_inputs(module: Any, fixed: dict[str, np.ndarray]) -> Any:
    """``module`` with the ``main`` parameters in ``fixed`` bound to those values and every
    subgraph that then depends only on constants folded (``BindParams`` + ``FoldConstant`` +
    DCE): BERT's attention-mask / position-id code (int64 / bool ``arange``, ``where``,
    ``bitwise_and``, ...) becomes constants for that fixed mask and shape."""
    import tvm
    from tvm import relax

    mod = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) if hasattr(
        tvm.runtime, "tensor") else tvm.nd.array(v) for k, v in fixed.items()})(module)
    mod = relax.transform.FoldConstant()(mod)
    return relax.transform.DeadCodeElimination(["main"])(mod)


def _expand(x: np.ndarray, axes) -> np.ndarray:
    for a in sorted(int(a) for a in axes):
        x = np.expand_dims(x, a if a >= 0 else a + x.ndim + 1)
    return x


# ops evaluated with numpy when every input is known (the fixed-mask / position-id code)
_NUMPY = {
    "relax.arange": lambda v, k, shape: np.arange(int(k[0]), int(k[1]), int(k[2])).astype(
        str(v.attrs.dtype)),
    "relax.expand_dims": lambda v, k, shape: _expand(k[0], v.attrs.axis),
    "relax.bitwise_and": lambda v, k, shape: np.bitwise_and(k[0], k[1]),
    "relax.less": lambda v, k, shape: np.less(k[0], k[1]),
    "relax.greater_equal": lambda v, k, shape: np.greater_equal(k[0], k[1]),
    "relax.where": lambda v, k, shape: np.where(k[0], k[1], k[2]),
    "relax.index_tensor": lambda v, k, shape: k[0][tuple(k[1])],
    "relax.broadcast_to": lambda v, k, shape: np.broadcast_to(k[0], shape).copy(),
    "relax.astype": lambda v, k, shape: k[0].astype(str(v.attrs.dtype)),
    "relax.max": lambda v, k, shape: np.max(k[0], axis=tuple(int(a) for a in v.attrs.axis),
                                            keepdims=bool(v.attrs.keepdims)),
    "relax.reshape": lambda v, k, shape: k[0].reshape(shape),
    "relax.permute_dims": lambda v, k, shape: np.transpose(
        k[0], None if v.attrs.axes is None else tuple(int(a) for a in v.attrs.axes)),
    "relax.take": lambda v, k, shape: np.take(k[0], k[1], axis=int(v.attrs.axis)),
    "relax.add": lambda v, k, shape: k[0] + k[1],
    "relax.multiply": lambda v, k, shape: k[0] * k[1],
}

_FLOAT_BINARY = {"relax.add": "add", "relax.subtract": "sub", "relax.multiply": "mul",
                 "relax.divide": "div"}


def mixed_whole_model_region(main: Any, regions: dict[str, Region]) -> tuple[Region | None, str]:
    """``main`` (after ``fold_fixed_inputs``) with ``regions`` inlined as one TFLite graph in
    which the CPU ops between the regions are float32 builtins: ``QUANTIZE`` / ``DEQUANTIZE``
    at the region borders, ``GATHER`` (embedding ``take``), ``RESHAPE``, ``TRANSPOSE``,
    ``ADD`` / ``SUB`` / ``MUL`` / ``DIV``, layer norm as ``MEAN, SUB, MUL, MEAN, ADD eps,
    RSQRT, MUL, MUL gamma, ADD beta``; an int64 model input cast to int32 is an int32 TFLite
    input. Returns (None, why) for an op it has no form for."""
    import tvm
    from tvm import relax

    tensors: dict[str, TensorSpec] = {}
    ops: list[RegionOp] = []
    inputs: list[str] = []
    names: dict[Any, str] = {}
    params = list(main.params)

    def new(prefix: str, shape, dtype: str, quant=None, data=None) -> str:
        n = f"{prefix}_{len(tensors)}"
        tensors[n] = TensorSpec(n, tuple(int(d) for d in shape), dtype, quant, data)
        return n

    def const(value: np.ndarray) -> str:
        value = np.asarray(value)
        dtype = {"float32": "float32", "int32": "int32", "int64": "int32", "int8": "int8",
                 "bool": "bool"}[str(value.dtype)]
        value = value.astype(dtype) if dtype != str(value.dtype) else value
        return new("const", value.shape, dtype, data=np.ascontiguousarray(value))

    consts: dict[Any, np.ndarray] = {}  # vars known before the model runs (fixed inputs)

    def cval(e: Any) -> np.ndarray | None:
        if type(e).__name__ in ("IntImm", "PrimValue"):
            return np.asarray(int(getattr(e, "value", e)))
        if isinstance(e, tvm.ir.Constant):
            return e.value.numpy()
        if isinstance(e, relax.Tuple):
            vals = [cval(f) for f in e.fields]
            return None if any(x is None for x in vals) else vals  # type: ignore[return-value]
        if type(e).__name__ in ("IntImm", "PrimValue"):
            return np.asarray(int(getattr(e, "value", e)))
        return consts.get(e)

    def arg(e: Any) -> str:
        if e in consts and e not in names:
            names[e] = const(consts[e])
        if isinstance(e, tvm.ir.Constant):
            return const(e.value.numpy())
        return names[e]

    def shape_of(v: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in v.ty.shape)

    for p in params:
        dtype = str(p.ty.dtype)
        if dtype not in ("float32", "int64", "int32"):
            return None, f"model input {p.name_hint} of dtype {dtype}"
        names[p] = new(f"input{len(inputs)}", shape_of(p), "int32" if dtype == "int64"
                       else dtype)
        inputs.append(names[p])
    bindings = [b for block in main.body.blocks for b in block.bindings]
    for b in bindings:
        v = b.value
        if isinstance(v, relax.Tuple):
            names[b.var] = [arg(f) for f in v.fields]  # type: ignore[assignment]
            continue
        if isinstance(v, tvm.ir.Constant):
            consts[b.var] = v.value.numpy()
            continue
        if isinstance(v, relax.Var):
            if v in consts:
                consts[b.var] = consts[v]
            else:
                names[b.var] = names[v]
            continue
        if not isinstance(v, relax.Call):
            return None, f"binding {type(v).__name__} in main"
        op = _op_name(v)
        known = [cval(a) for a in v.args if not isinstance(a, relax.ShapeExpr)]
        if op in _NUMPY and op != "relax.call_dps_packed" and all(k is not None for k in known):
            consts[b.var] = _NUMPY[op](v, known, tuple(int(d) for d in b.var.ty.shape))
            continue
        if op == "relax.where" and cval(v.args[0]) is not None:  # a fixed mask: one branch
            cond = cval(v.args[0])
            if cond.all() or not cond.any():
                pick = v.args[1] if cond.all() else v.args[2]
                if pick in consts or cval(pick) is not None:
                    consts[b.var] = np.broadcast_to(cval(pick), tuple(
                        int(d) for d in b.var.ty.shape)).copy()
                else:
                    names[b.var] = arg(pick)
                continue
            return None, "a where on a mask that is not all true or all false"
        try:
            out_shape = shape_of(b.var)
        except (TypeError, AttributeError):
            out_shape = ()
        if op == "relax.call_dps_packed":
            symbol = str(v.args[0].global_symbol)
            region = regions[symbol]
            out = _inline_region(symbol, region, [arg(a) for a in v.args[1].fields],
                                 tensors, ops)
            if out is None:
                return None, f"region {symbol} has several outputs"
            names[b.var] = out
            continue
        if op == "relax.quantize":
            x = arg(v.args[0])
            s, z = _qparams(v)
            if tensors[x].dtype != "float32":
                return None, f"quantize of a {tensors[x].dtype} value"
            y = new("q", out_shape, "int8", Quant((s,), (z,)))
            ops.append(RegionOp("quantize", (x,), (y,), {}))
        elif op == "relax.dequantize":
            x = arg(v.args[0])
            s, z = _qparams(v)
            if tensors[x].quant != Quant((s,), (z,)):
                return None, "a dequantize whose parameters differ from its int8 input's"
            y = new("dq", out_shape, "float32")
            ops.append(RegionOp("dequantize", (x,), (y,), {}))
        elif op == "relax.astype":
            x = arg(v.args[0])
            dt = str(v.attrs.dtype)
            if v.args[0] in params and dt == "int32":
                names[b.var] = x  # the int64 input is already an int32 TFLite input
                continue
            if dt not in ("float32", "int32"):
                return None, f"astype to {dt}"
            y = new("cast", out_shape, dt)
            ops.append(RegionOp("cast", (x,), (y,), {}))
        elif op in ("relax.reshape", "relax.flatten", "relax.expand_dims", "relax.squeeze"):
            x = arg(v.args[0])
            t = tensors[x]
            sh = const(np.asarray(out_shape, np.int32))
            y = new("reshape", out_shape, t.dtype, t.quant)
            ops.append(RegionOp("reshape", (x, sh), (y,), {"new_shape": out_shape}))
        elif op == "relax.permute_dims":
            x = arg(v.args[0])
            t = tensors[x]
            rank = len(t.shape)
            perm = (tuple(int(a) % rank for a in v.attrs.axes) if v.attrs.axes is not None
                    else tuple(reversed(range(rank))))
            p = const(np.asarray(perm, np.int32))
            y = new("transpose", out_shape, t.dtype, t.quant)
            ops.append(RegionOp("transpose", (x, p), (y,), {"perm": perm}))
        elif op == "relax.take":
            x, idx = arg(v.args[0]), arg(v.args[1])
            y = new("gather", out_shape, tensors[x].dtype, tensors[x].quant)
            ops.append(RegionOp("gather", (x, idx), (y,), {"axis": int(v.attrs.axis)}))
        elif op in _FLOAT_BINARY:
            a, c = arg(v.args[0]), arg(v.args[1])
            if tensors[a].dtype != "float32" or tensors[c].dtype != "float32":
                return None, f"{op} on {tensors[a].dtype} / {tensors[c].dtype}"
            y = new(_FLOAT_BINARY[op], out_shape, "float32")
            ops.append(RegionOp(_FLOAT_BINARY[op], (a, c), (y,), {}))
        elif op == "relax.nn.layer_norm":
            x, gamma, beta = (arg(a) for a in v.args[:3])
            rank = len(tensors[x].shape)
            axes = sorted(int(a) % rank for a in v.attrs.axes)
            if axes != [rank - 1]:
                return None, "a layer norm over other than the last axis"
            red = tuple(s if i != rank - 1 else 1 for i, s in enumerate(out_shape))
            ax = const(np.asarray([rank - 1], np.int32))
            mu = new("ln_mean", red, "float32")
            ops.append(RegionOp("mean", (x, ax), (mu,), {"keep_dims": True}))
            d = new("ln_center", out_shape, "float32")
            ops.append(RegionOp("sub", (x, mu), (d,), {}))
            d2 = new("ln_square", out_shape, "float32")
            ops.append(RegionOp("mul", (d, d), (d2,), {}))
            var = new("ln_var", red, "float32")
            ops.append(RegionOp("mean", (d2, ax), (var,), {"keep_dims": True}))
            ve = new("ln_var_eps", red, "float32")
            ops.append(RegionOp("add", (var, const(np.float32([float(v.attrs.epsilon)]))),
                                (ve,), {}))
            r = new("ln_rstd", red, "float32")
            ops.append(RegionOp("rsqrt", (ve,), (r,), {}))
            n = new("ln_norm", out_shape, "float32")
            ops.append(RegionOp("mul", (d, r), (n,), {}))
            g = new("ln_scaled", out_shape, "float32")
            ops.append(RegionOp("mul", (n, gamma), (g,), {}))
            y = new("layer_norm", out_shape, "float32")
            ops.append(RegionOp("add", (g, beta), (y,), {}))
        else:
            return None, f"{op} between the NPU regions has no TFLite form in edgecc"
        names[b.var] = y
    result = main.body.body
    outs = names[result] if isinstance(names.get(result), list) else [names[result]]
    return Region("whole_model", tensors, tuple(ops), tuple(inputs), tuple(outs)), ""
