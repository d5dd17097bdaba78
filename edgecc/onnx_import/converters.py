"""ONNX operator converters: ONNX semantics in terms of torch (hence ATen) operators.

Each converter is registered for an opset range with ``@op("Name", since=, until=)`` and
called as ``fn(ctx, *inputs) -> output | tuple of outputs``. Inputs are torch tensors,
``None`` for an omitted optional input, or a :class:`ShapeValue` -- a 1-D (or scalar) int64
tensor held as Python ints / SymInts, which is what ``Shape`` produces, so shape arithmetic
(``Shape -> Gather -> Concat -> Reshape``) stays symbolic under ``torch.export`` instead of
becoming data-dependent tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_REGISTRY: dict[str, list[tuple[int, int, Callable[..., Any]]]] = {}


def op(*names: str, since: int = 1, until: int = 10_000):
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            _REGISTRY.setdefault(name, []).append((since, until, fn))
        return fn

    return wrap


def lookup(name: str, opset: int) -> Callable[..., Any] | None:
    for since, until, fn in sorted(_REGISTRY.get(name, []), key=lambda r: -r[0]):
        if since <= opset <= until:
            return fn
    return None


def node_key(node: Any) -> str:
    """Registry key of an ONNX node: ``op_type`` in the default domain, else
    ``domain.op_type`` (e.g. ``com.microsoft.QGemm``)."""
    domain = node.domain or ""
    return node.op_type if domain in ("", "ai.onnx") else f"{domain}.{node.op_type}"


def supported_ops() -> dict[str, list[tuple[int, int]]]:
    return {k: [(s, u) for s, u, _ in v] for k, v in sorted(_REGISTRY.items())}


class ShapeValue:
    """An int64 tensor known element-wise as Python ints / SymInts."""

    def __init__(self, values: Sequence[Any], scalar: bool = False):
        self.values = list(values)
        self.scalar = scalar

    def tensor(self) -> torch.Tensor:
        if self.scalar:
            v = self.values[0]
            return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.int64)
        if all(isinstance(v, int) for v in self.values):
            return torch.tensor(self.values, dtype=torch.int64)
        return torch.stack([torch.as_tensor(v, dtype=torch.int64) for v in self.values])

    def __repr__(self) -> str:
        return f"ShapeValue({self.values}{', scalar' if self.scalar else ''})"


ONNX_DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 12: torch.uint32,
    13: torch.uint64, 16: torch.bfloat16,
}


class Ctx:
    """What a converter may ask about its node: attributes, static input values, opset."""

    def __init__(self, node: Any, opset: int, static: dict[str, torch.Tensor]):
        from onnx import helper

        self.node = node
        self.opset = opset
        self._static = static
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def static(self, i: int) -> Any:
        """The import-time value of input ``i`` (a numpy array or real tensor) if it is a
        constant, else None. Use ``.tolist()`` / ``.item()`` / ``int()`` on it."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        return self._static.get(self.node.input[i])

    def ints(self, i: int, value: Any) -> list[Any] | None:
        """Input ``i`` as a list of ints/SymInts (constant or shape value), or None if absent."""
        if value is None:
            return None
        if isinstance(value, ShapeValue):
            return list(value.values)
        const = self.static(i)
        if const is not None:
            return [int(v) for v in const.reshape(-1).tolist()]
        raise NotImplementedError(
            f"{self.node.op_type} node '{self.node.name}': input {i} must be known at import "
            "time (a constant or a shape), but it is computed from the data"
        )


def T(x: Any) -> Any:
    return x.tensor() if isinstance(x, ShapeValue) else x


# -- constants and shapes -------------------------------------------------------------------

@op("Identity")
def _identity(ctx, x):
    return x


@op("Shape")
def _shape(ctx, x):
    if isinstance(x, ShapeValue):  # the shape of a shape: [] for a scalar, else [length]
        dims = [] if x.scalar else [len(x.values)]
    else:
        dims = list(x.shape)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", None)
    return ShapeValue(dims[start:end] if end is not None else dims[start:])


@op("Size")
def _size(ctx, x):
    return ShapeValue([math.prod(T(x).shape)], scalar=True)


@op("Constant")
def _constant(ctx):
    # Registered so the support check accepts it; _fold_constants evaluates every Constant.
    raise AssertionError("Constant nodes are evaluated at import")


@op("ConstantOfShape")
def _constant_of_shape(ctx, shape):
    value = ctx.attr("value")
    from onnx import numpy_helper

    fill = torch.from_numpy(numpy_helper.to_array(value).copy()) if value is not None else \
        torch.zeros(1)
    return torch.full(ctx.ints(0, shape), fill.reshape(-1)[0].item(), dtype=fill.dtype)


@op("Cast")
def _cast(ctx, x):
    dtype = ONNX_DTYPES[ctx.attr("to")]
    if isinstance(x, ShapeValue) and dtype in (torch.int64, torch.int32):
        return x
    return T(x).to(dtype)


@op("CastLike", since=15)
def _cast_like(ctx, x, like):
    if isinstance(x, ShapeValue) and T(like).dtype == torch.int64:
        return x
    return T(x).to(T(like).dtype)


@op("Reshape")
def _reshape(ctx, x, shape):
    dims = ctx.ints(1, shape)
    allowzero = ctx.attr("allowzero", 0)
    x = T(x)
    if not allowzero:
        dims = [x.shape[i] if (isinstance(d, int) and d == 0) else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def _flatten(ctx, x):
    x = T(x)
    axis = ctx.attr("axis", 1) % max(x.dim(), 1) if ctx.attr("axis", 1) < 0 else ctx.attr("axis", 1)
    lead = math.prod(x.shape[:axis]) if axis else 1
    return x.reshape(lead, -1)


@op("Transpose")
def _transpose(ctx, x):
    x = T(x)
    perm = ctx.attr("perm") or list(reversed(range(x.dim())))
    return x.permute(list(perm))


def _axes(ctx, i: int, value: Any) -> list[int] | None:
    if ctx.opset >= 13 and len(ctx.node.input) > i:
        got = ctx.ints(i, value)
        return [int(a) for a in got] if got is not None else None
    axes = ctx.attr("axes")
    return list(axes) if axes is not None else None


@op("Squeeze")
def _squeeze(ctx, x, axes=None):
    axes = _axes(ctx, 1, axes)
    if isinstance(x, ShapeValue):
        return ShapeValue(x.values, scalar=True) if len(x.values) == 1 else x
    if axes is None:
        return x.squeeze()
    return x.squeeze([a % x.dim() for a in axes]) if axes else x


@op("Unsqueeze")
def _unsqueeze(ctx, x, axes=None):
    axes = _axes(ctx, 1, axes)
    if isinstance(x, ShapeValue) and x.scalar and axes in ([0], [-1]):
        return ShapeValue(x.values)
    x = T(x)
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Concat")
def _concat(ctx, *xs):
    axis = ctx.attr("axis")
    present = [x for x in xs if x is not None]
    if all(isinstance(x, ShapeValue) or (isinstance(x, torch.Tensor) and ctx.static(i) is not None
                                         and x.dim() <= 1 and x.dtype == torch.int64)
           for i, x in enumerate(xs) if x is not None):
        out: list[Any] = []
        for i, x in enumerate(xs):
            if x is not None:
                out.extend(ctx.ints(i, x))
        return ShapeValue(out)
    tensors = [T(x) for x in present]
    tensors = [t for t in tensors if t.numel() or t.dim() > 1]
    return torch.cat(tensors, axis)


@op("Gather")
def _gather(ctx, data, indices):
    axis = ctx.attr("axis", 0)
    if isinstance(data, ShapeValue):
        idx = ctx.ints(1, indices) if not isinstance(indices, ShapeValue) else indices.values
        scalar = isinstance(indices, ShapeValue) and indices.scalar or (
            isinstance(indices, torch.Tensor) and indices.dim() == 0)
        picked = [data.values[int(i)] for i in idx]
        return ShapeValue(picked, scalar=scalar)
    data, indices = T(data), T(indices)
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    if indices.dim() == 0:
        return data.select(axis, indices) if ctx.static(1) is None else data.select(
            axis, int(ctx.static(1)) % data.shape[axis])
    out = torch.index_select(data, axis, indices.reshape(-1))
    return out.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])


@op("GatherElements")
def _gather_elements(ctx, data, indices):
    axis = ctx.attr("axis", 0)
    data, indices = T(data), T(indices)
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    return torch.gather(data, axis, indices)


@op("GatherND")
def _gather_nd(ctx, data, indices):
    data, indices = T(data), T(indices)
    b = ctx.attr("batch_dims", 0)
    k = indices.shape[-1]
    batch = list(data.shape[:b])
    nb = math.prod(batch) if batch else 1
    d = data.reshape(nb, *data.shape[b:])
    idx = indices.reshape(nb, -1, k)
    idx = torch.where(idx < 0, idx + torch.tensor(list(d.shape[1:k + 1])), idx)
    rows = torch.arange(nb).reshape(nb, 1).expand(nb, idx.shape[1])
    out = d[(rows, *[idx[..., j] for j in range(k)])]
    return out.reshape(*batch, *indices.shape[b:-1], *data.shape[b + k:])


@op("ScatterND")
def _scatter_nd(ctx, data, indices, updates):
    data, indices, updates = T(data), T(indices), T(updates)
    k = indices.shape[-1]
    flat_idx = indices.reshape(-1, k)
    index = tuple(flat_idx[:, j] for j in range(k))
    upd = updates.reshape(flat_idx.shape[0], *data.shape[k:])
    return data.index_put(index, upd)


@op("Slice", since=10)
def _slice(ctx, x, starts, ends, axes=None, steps=None):
    s, e = ctx.ints(1, starts), ctx.ints(2, ends)
    ax = ctx.ints(3, axes) if axes is not None else list(range(len(s)))
    st = ctx.ints(4, steps) if steps is not None else [1] * len(s)
    if isinstance(x, ShapeValue):
        (a, b, c) = (s[0], e[0], st[0])
        n = len(x.values)
        a = max(min(int(a), n), -n) if isinstance(a, int) else a
        b = max(min(int(b), n), -n - 1) if isinstance(b, int) else b
        return ShapeValue(x.values[slice(a, b, c)])
    x = T(x)
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for a, b, axis, c in zip(s, e, ax, st):
        axis = int(axis) % x.dim()
        if c > 0:
            index[axis] = slice(a, b if not (isinstance(b, int) and b > 2**62) else None, c)
        else:  # negative steps: torch slicing needs a flip
            size = x.shape[axis]
            a = min(a, size - 1) if a >= 0 else a + size
            b = b + size if b >= 0 or b < -size else b + size
            lo = max(b + 1, 0) if b >= -1 else 0
            flips.append((axis, lo, a + 1, -c))
    out = x[tuple(index)]
    for axis, lo, hi, c in flips:
        out = out.narrow(axis, lo, max(hi - lo, 0)).flip(axis)[::1]
        if c != 1:
            idx = [slice(None)] * out.dim()
            idx[axis] = slice(None, None, c)
            out = out[tuple(idx)]
    return out


@op("Split")
def _split(ctx, x, split=None):
    x = T(x)
    axis = ctx.attr("axis", 0)
    sizes = ctx.ints(1, split) if (ctx.opset >= 13 and split is not None) else ctx.attr("split")
    n = len(ctx.node.output)
    if not sizes:
        num = ctx.attr("num_outputs", n)
        total = x.shape[axis]
        chunk = -(-total // num)
        return tuple(torch.split(x, chunk, axis))
    return tuple(torch.split(x, list(sizes), axis))


@op("Expand")
def _expand(ctx, x, shape):
    x = T(x)
    dims = ctx.ints(1, shape)
    rank = max(x.dim(), len(dims))
    dims = [1] * (rank - len(dims)) + list(dims)
    xs = [1] * (rank - x.dim()) + list(x.shape)
    target = [a if (isinstance(b, int) and b == 1) else b for a, b in zip(xs, dims)]
    return x.reshape(xs).expand(target) if rank > x.dim() else x.expand(target)


@op("Tile")
def _tile(ctx, x, repeats):
    return T(x).repeat(ctx.ints(1, repeats))


@op("Range")
def _range(ctx, start, limit, delta):
    vals = [(v.values[0] if isinstance(v, ShapeValue) else (ctx.static(i).item() if ctx.static(i) is not None else v))
            for i, v in enumerate((start, limit, delta))]
    dtype = T(start).dtype if not isinstance(start, ShapeValue) else torch.int64
    return torch.arange(vals[0], vals[1], vals[2], dtype=dtype)


@op("Pad")
def _pad(ctx, x, pads=None, value=None, axes=None):
    x = T(x)
    mode = ctx.attr("mode", "constant")
    p = ctx.ints(1, pads) if ctx.opset >= 11 else list(ctx.attr("pads"))
    fill = float(T(value).item() if ctx.static(2) is None and value is not None and not isinstance(value, torch.Tensor)
                 else (ctx.static(2).item() if ctx.static(2) is not None else 0.0))
    rank = x.dim()
    ax = ctx.ints(3, axes) if axes is not None else list(range(rank))
    n = len(ax)
    begins, ends = p[:n], p[n:]
    torch_pad: list[Any] = [0] * (2 * rank)
    for a, b, e in zip(ax, begins, ends):
        a = int(a) % rank
        torch_pad[2 * (rank - 1 - a)] = b
        torch_pad[2 * (rank - 1 - a) + 1] = e
    if mode == "constant":
        return F.pad(x, torch_pad, value=fill)
    trimmed = torch_pad[: 2 * (rank - 2)]
    return F.pad(x, trimmed, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


# -- elementwise ----------------------------------------------------------------------------

def _shape_math(fn: Callable[[Any, Any], Any], a: Any, b: Any, ctx: Ctx) -> Any:
    """Arithmetic on shape values stays on Python ints/SymInts."""
    av = a.values if isinstance(a, ShapeValue) else ctx.ints(0, a)
    bv = b.values if isinstance(b, ShapeValue) else ctx.ints(1, b)
    if len(av) == 1 and len(bv) > 1:
        av = av * len(bv)
    if len(bv) == 1 and len(av) > 1:
        bv = bv * len(av)
    scalar = (not isinstance(a, ShapeValue) or a.scalar) and (not isinstance(b, ShapeValue) or b.scalar)
    return ShapeValue([fn(x, y) for x, y in zip(av, bv)], scalar=scalar)


def _binary(torch_fn: Callable[[Any, Any], Any], int_fn: Callable[[Any, Any], Any] | None = None):
    def convert(ctx, a, b):
        if int_fn is not None and (isinstance(a, ShapeValue) or isinstance(b, ShapeValue)):
            try:
                return _shape_math(int_fn, a, b, ctx)
            except NotImplementedError:
                pass
        return torch_fn(T(a), T(b))

    return convert


op("Add")(_binary(torch.add, lambda x, y: x + y))
op("Sub")(_binary(torch.sub, lambda x, y: x - y))
op("Mul")(_binary(torch.mul, lambda x, y: x * y))


@op("Div")
def _div(ctx, a, b):
    if isinstance(a, ShapeValue) or isinstance(b, ShapeValue):
        return _shape_math(lambda x, y: x // y, a, b, ctx)
    a, b = T(a), T(b)
    if not a.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


op("Pow")(_binary(lambda a, b: torch.pow(a, b).to(a.dtype)))
op("Equal")(_binary(torch.eq))
op("Less")(_binary(torch.lt))
op("LessOrEqual")(_binary(torch.le))
op("Greater")(_binary(torch.gt))
op("GreaterOrEqual")(_binary(torch.ge))
op("And")(_binary(torch.logical_and))
op("Or")(_binary(torch.logical_or))
op("Xor")(_binary(torch.logical_xor))


@op("Mod")
def _mod(ctx, a, b):
    a, b = T(a), T(b)
    return torch.fmod(a, b) if ctx.attr("fmod", 0) else torch.remainder(a, b)


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]):
    return lambda ctx, x: fn(T(x))


for _name, _fn in {
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp,
    "Log": torch.log, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Neg": torch.neg,
    "Abs": torch.abs, "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil,
    "Round": torch.round, "Sign": torch.sign, "Sin": torch.sin, "Cos": torch.cos,
    "Not": torch.logical_not, "Softplus": F.softplus, "Softsign": F.softsign,
    "IsNaN": torch.isnan, "Tan": torch.tan, "Atan": torch.atan, "Asin": torch.asin,
    "Acos": torch.acos, "Sinh": torch.sinh, "Cosh": torch.cosh,
}.items():
    op(_name)(_unary(_fn))


@op("HardSwish", since=14)
def _hardswish(ctx, x):
    return F.hardswish(T(x))


@op("HardSigmoid")
def _hardsigmoid(ctx, x):
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    return torch.clamp(T(x) * alpha + beta, 0.0, 1.0)


@op("LeakyRelu")
def _leaky(ctx, x):
    return F.leaky_relu(T(x), ctx.attr("alpha", 0.01))


@op("Elu")
def _elu(ctx, x):
    return F.elu(T(x), ctx.attr("alpha", 1.0))


@op("Selu")
def _selu(ctx, x):
    alpha, gamma = ctx.attr("alpha", 1.67326319217681884765625), ctx.attr("gamma", 1.05070102214813232421875)
    x = T(x)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("PRelu")
def _prelu(ctx, x, slope):
    x, slope = T(x), T(slope)
    if slope.dim() == 1 and x.dim() > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
        # Per-channel slopes from opset < 7 models (kept by the version converter).
        slope = slope.reshape(-1, *([1] * (x.dim() - 2)))
    return torch.where(x >= 0, x, x * slope)


@op("Shrink", since=9)
def _shrink(ctx, x):
    x = T(x)
    lambd, bias = ctx.attr("lambd", 0.5), ctx.attr("bias", 0.0)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@op("Gelu", since=20)
def _gelu(ctx, x):
    return F.gelu(T(x), approximate=ctx.attr("approximate", "none"))


@op("Clip", since=11)
def _clip(ctx, x, lo=None, hi=None):
    x = T(x)
    lo_v = ctx.static(1)
    hi_v = ctx.static(2)
    lo_s = lo_v.item() if lo_v is not None else (T(lo) if lo is not None else None)
    hi_s = hi_v.item() if hi_v is not None else (T(hi) if hi is not None else None)
    if lo_s is not None and hi_s is not None and not isinstance(lo_s, torch.Tensor) and \
            not isinstance(hi_s, torch.Tensor) and (lo_s, hi_s) == (0.0, 6.0):
        return F.hardtanh(x, 0.0, 6.0)
    return torch.clamp(x, lo_s, hi_s)


@op("Where")
def _where(ctx, c, a, b):
    return torch.where(T(c), T(a), T(b))


def _variadic(fn: Callable[[Any, Any], Any]):
    def convert(ctx, *xs):
        out = T(xs[0])
        for x in xs[1:]:
            out = fn(out, T(x))
        return out

    return convert


op("Max")(_variadic(torch.maximum))
op("Min")(_variadic(torch.minimum))
op("Sum")(_variadic(torch.add))


@op("Mean")
def _mean(ctx, *xs):
    return _variadic(torch.add)(ctx, *xs) / len(xs)


@op("Dropout")
def _dropout(ctx, x, *rest):
    x = T(x)
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


# -- neural-network operators ---------------------------------------------------------------

def _conv_padding(ctx, x, kernel: Sequence[int], strides, dilations):
    pads = ctx.attr("pads")
    auto = ctx.attr("auto_pad", "NOTSET")
    n = len(kernel)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = []
        for i in range(n):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            need = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            total.append(need)
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
        return begin, end
    if auto == "VALID" or not pads:
        return [0] * n, [0] * n
    return list(pads[:n]), list(pads[n:])


def _pad_explicitly(x: torch.Tensor, begin: list[Any], end: list[Any], value: float = 0.0):
    """Apply asymmetric (begin != end) spatial padding up front; torch ops take symmetric."""
    pad: list[Any] = []
    for bgn, e in zip(reversed(begin), reversed(end)):
        pad += [bgn, e]
    return F.pad(x, pad, value=value), [0] * len(begin)


@op("Conv")
def _conv(ctx, x, w, b=None):
    x, w = T(x), T(w)
    n = w.dim() - 2
    kernel = list(w.shape[2:])
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    begin, end = _conv_padding(ctx, x, kernel, strides, dilations)
    if begin != end:
        x, begin = _pad_explicitly(x, begin, end)
    return torch.ops.aten.convolution(x, w, T(b), strides, begin, dilations, False, [0] * n,
                                      ctx.attr("group", 1))


@op("ConvTranspose")
def _conv_transpose(ctx, x, w, b=None):
    x, w = T(x), T(w)
    n = w.dim() - 2
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    pads = list(ctx.attr("pads", [0] * 2 * n))
    out_pad = list(ctx.attr("output_padding", [0] * n))
    if pads[:n] != pads[n:]:
        raise NotImplementedError("ConvTranspose with asymmetric pads")
    return torch.ops.aten.convolution(x, w, T(b), strides, pads[:n], dilations, True, out_pad,
                                      ctx.attr("group", 1))


@op("BatchNormalization")
def _batch_norm(ctx, x, scale, bias, mean, var):
    return F.batch_norm(T(x), T(mean), T(var), T(scale), T(bias), False, 0.0,
                        ctx.attr("epsilon", 1e-5))


@op("InstanceNormalization")
def _instance_norm(ctx, x, scale, bias):
    return F.instance_norm(T(x), weight=T(scale), bias=T(bias), eps=ctx.attr("epsilon", 1e-5))


@op("LayerNormalization", since=17)
def _layer_norm(ctx, x, scale, bias=None):
    x = T(x)
    axis = ctx.attr("axis", -1) % x.dim()
    shape = list(x.shape[axis:])
    out = F.layer_norm(x, shape, T(scale), T(bias), ctx.attr("epsilon", 1e-5))
    return out if len(ctx.node.output) == 1 else (out, None, None)


@op("Gemm")
def _gemm(ctx, a, b, c=None):
    a, b = T(a), T(b)
    if ctx.attr("transA", 0):
        a = a.t()
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if ctx.attr("transB", 0) and alpha == 1.0 and beta == 1.0:
        return F.linear(a, b, T(c))
    if ctx.attr("transB", 0):
        b = b.t()
    out = a @ b
    if alpha != 1.0:
        out = out * alpha
    if c is not None:
        out = out + (T(c) * beta if beta != 1.0 else T(c))
    return out


@op("MatMul")
def _matmul(ctx, a, b):
    return torch.matmul(T(a), T(b))


@op("Einsum", since=12)
def _einsum(ctx, *xs):
    return torch.einsum(ctx.attr("equation"), *[T(x) for x in xs])


def _pool_args(ctx, x):
    kernel = list(ctx.attr("kernel_shape"))
    n = len(kernel)
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    begin, end = _conv_padding(ctx, x, kernel, strides, dilations)
    return kernel, strides, dilations, begin, end


@op("MaxPool")
def _max_pool(ctx, x):
    x = T(x)
    kernel, strides, dilations, begin, end = _pool_args(ctx, x)
    n = len(kernel)
    if begin != end:
        x, begin = _pad_explicitly(x, begin, end, float("-inf"))
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    return fn(x, kernel, strides, begin, dilations, ceil_mode=bool(ctx.attr("ceil_mode", 0)))


@op("AveragePool")
def _avg_pool(ctx, x):
    x = T(x)
    kernel, strides, dilations, begin, end = _pool_args(ctx, x)
    n = len(kernel)
    include = bool(ctx.attr("count_include_pad", 0))
    if begin != end:
        x, begin = _pad_explicitly(x, begin, end)
        include = True
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return fn(x, kernel, strides, begin, ceil_mode=bool(ctx.attr("ceil_mode", 0)),
              count_include_pad=include)


@op("GlobalAveragePool")
def _gap(ctx, x):
    x = T(x)
    return x.mean(list(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _gmp(ctx, x):
    x = T(x)
    return x.amax(list(range(2, x.dim())), keepdim=True)


@op("LRN")
def _lrn(ctx, x):
    return F.local_response_norm(T(x), ctx.attr("size"), ctx.attr("alpha", 1e-4),
                                 ctx.attr("beta", 0.75), ctx.attr("bias", 1.0))


@op("Softmax", since=13)
def _softmax(ctx, x):
    return torch.softmax(T(x), ctx.attr("axis", -1))


@op("LogSoftmax", since=13)
def _log_softmax(ctx, x):
    return torch.log_softmax(T(x), ctx.attr("axis", -1))


def _flatten_softmax(fn):
    def convert(ctx, x):  # opset < 13: softmax over the flattened tail from ``axis``
        x = T(x)
        axis = ctx.attr("axis", 1) % x.dim()
        flat = x.reshape(math.prod(x.shape[:axis]) if axis else 1, -1)
        return fn(flat, -1).reshape(x.shape)

    return convert


op("Softmax", since=1, until=12)(_flatten_softmax(torch.softmax))
op("LogSoftmax", since=1, until=12)(_flatten_softmax(torch.log_softmax))


# -- reductions and index ops ---------------------------------------------------------------

def _reduce(fn_name: str, attr_axes_until: int):
    def convert(ctx, x, axes=None):
        x = T(x)
        keep = bool(ctx.attr("keepdims", 1))
        if ctx.opset > attr_axes_until and len(ctx.node.input) > 1 and axes is not None:
            dims = ctx.ints(1, axes)
        else:
            dims = ctx.attr("axes")
        if not dims:
            if ctx.attr("noop_with_empty_axes", 0):
                return x
            dims = list(range(x.dim()))
        dims = [int(d) % x.dim() for d in dims]
        if fn_name == "mean":
            return x.mean(dims, keepdim=keep)
        if fn_name == "sum":
            return x.sum(dims, keepdim=keep)
        if fn_name == "max":
            return x.amax(dims, keepdim=keep)
        if fn_name == "min":
            return x.amin(dims, keepdim=keep)
        if fn_name == "prod":
            out = x
            for d in sorted(dims, reverse=True):
                out = out.prod(d, keepdim=keep)
            return out
        if fn_name == "l2":
            return torch.sqrt((x * x).sum(dims, keepdim=keep))
        if fn_name == "l1":
            return x.abs().sum(dims, keepdim=keep)
        if fn_name == "sumsquare":
            return (x * x).sum(dims, keepdim=keep)
        if fn_name == "logsumexp":
            return torch.logsumexp(x, dims, keepdim=keep)
        raise AssertionError(fn_name)

    return convert


for _name, _fn, _until in (("ReduceMean", "mean", 17), ("ReduceSum", "sum", 12),
                           ("ReduceMax", "max", 17), ("ReduceMin", "min", 17),
                           ("ReduceProd", "prod", 17), ("ReduceL2", "l2", 17),
                           ("ReduceL1", "l1", 17), ("ReduceSumSquare", "sumsquare", 17),
                           ("ReduceLogSumExp", "logsumexp", 17)):
    op(_name)(_reduce(_fn, _until))


def _arg(fn):
    def convert(ctx, x):
        x = T(x)
        axis = ctx.attr("axis", 0)
        keep = bool(ctx.attr("keepdims", 1))
        if ctx.attr("select_last_index", 0):
            flipped = x.flip(axis)
            idx = fn(flipped, axis, keepdim=keep)
            return x.shape[axis] - 1 - idx
        return fn(x, axis, keepdim=keep)

    return convert


op("ArgMax")(_arg(torch.argmax))
op("ArgMin")(_arg(torch.argmin))


@op("TopK", since=10)
def _topk(ctx, x, k):
    x = T(x)
    kk = ctx.ints(1, k)[0]
    values, indices = torch.topk(x, kk, dim=ctx.attr("axis", -1),
                                 largest=bool(ctx.attr("largest", 1)),
                                 sorted=bool(ctx.attr("sorted", 1)))
    return values, indices


@op("CumSum")
def _cumsum(ctx, x, axis):
    x = T(x)
    a = ctx.ints(1, axis)[0]
    if ctx.attr("reverse", 0):
        x = x.flip(a)
    out = torch.cumsum(x, a)
    if ctx.attr("exclusive", 0):
        out = out - x
    return out.flip(a) if ctx.attr("reverse", 0) else out


@op("Trilu", since=14)
def _trilu(ctx, x, k=None):
    x = T(x)
    kk = ctx.ints(1, k)[0] if k is not None else 0
    return torch.triu(x, kk) if ctx.attr("upper", 1) else torch.tril(x, kk)


@op("Resize", since=11)
def _resize(ctx, x, roi=None, scales=None, sizes=None):
    x = T(x)
    mode = ctx.attr("mode", "nearest")
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    spatial = x.dim() - 2
    size = None
    if sizes is not None and (isinstance(sizes, ShapeValue) or T(sizes).numel()):
        size = ctx.ints(3, sizes)[2:]
    scale = None
    if size is None:
        sc = ctx.static(2)
        if sc is None:
            raise NotImplementedError("Resize with data-dependent scales")
        scale = [float(s) for s in sc.tolist()[2:]]
    if mode == "nearest":
        nearest = ctx.attr("nearest_mode", "round_prefer_floor")
        if coord == "asymmetric" and nearest == "floor":
            return F.interpolate(x, size=size, scale_factor=scale, mode="nearest")
        if coord in ("half_pixel", "pytorch_half_pixel") and nearest in ("round_prefer_ceil",
                                                                           "round_prefer_floor"):
            return F.interpolate(x, size=size, scale_factor=scale, mode="nearest-exact")
        raise NotImplementedError(f"Resize nearest with {coord}/{nearest}")
    interp = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial] if mode == "linear" else \
        ("bicubic" if mode == "cubic" else None)
    if interp is None:
        raise NotImplementedError(f"Resize mode {mode}")
    if coord == "align_corners":
        return F.interpolate(x, size=size, scale_factor=scale, mode=interp, align_corners=True)
    if coord in ("half_pixel", "pytorch_half_pixel"):
        return F.interpolate(x, size=size, scale_factor=scale, mode=interp, align_corners=False)
    raise NotImplementedError(f"Resize {mode} with {coord}")


def numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16 or array.dtype.kind in "OUS":
        raise NotImplementedError(f"tensor dtype {array.dtype}")
    return torch.from_numpy(array.copy())


# Quantized operators (QDQ and QOperator) register themselves with @op on import.
from edgecc.onnx_import import quant_converters as _quant_converters  # noqa: E402,F401
