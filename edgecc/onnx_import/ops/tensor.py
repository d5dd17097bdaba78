"""Constants, casts and shape queries: Identity, Shape, Size, Constant, ConstantOfShape,
Cast, CastLike, Range; If on an import-time condition.

``Shape`` and ``Size`` produce :class:`ShapeValue` so the shape arithmetic that follows
stays symbolic under ``torch.export``.
"""

from __future__ import annotations

import math

import torch

from edgecc.onnx_import.converter import ONNX_DTYPES, Converter, ShapeValue, T


def _identity(ctx, x):
    return x


def _shape(ctx, x):
    if isinstance(x, ShapeValue):  # the shape of a shape: [] for a scalar, else [length]
        dims = [] if x.scalar else [len(x.values)]
    else:
        dims = list(x.shape)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", None)
    return ShapeValue(dims[start:end] if end is not None else dims[start:])


def _size(ctx, x):
    return ShapeValue([math.prod(T(x).shape)], scalar=True)


def _constant(ctx):
    # Registered so the support check accepts it; _fold_constants evaluates every Constant.
    raise AssertionError("Constant nodes are evaluated at import")


def _if(ctx, cond, *rest):
    # Registered so the support check accepts it; _fold_constants inlines the branch an
    # If with an import-time condition takes.
    raise NotImplementedError("If with a condition computed from the data")


def _constant_of_shape(ctx, shape):
    value = ctx.attr("value")
    from onnx import numpy_helper

    fill = torch.from_numpy(numpy_helper.to_array(value).copy()) if value is not None else \
        torch.zeros(1)
    return torch.full(ctx.ints(0, shape), fill.reshape(-1)[0].item(), dtype=fill.dtype)


def _cast(ctx, x):
    dtype = ONNX_DTYPES[ctx.attr("to")]
    if isinstance(x, ShapeValue) and dtype in (torch.int64, torch.int32):
        return x
    return T(x).to(dtype)


def _cast_like(ctx, x, like):
    if isinstance(x, ShapeValue) and T(like).dtype == torch.int64:
        return x
    return T(x).to(T(like).dtype)


def _range(ctx, start, limit, delta):
    vals = [(v.values[0] if isinstance(v, ShapeValue) else (ctx.static(i).item() if ctx.static(i) is not None else v))
            for i, v in enumerate((start, limit, delta))]
    dtype = T(start).dtype if not isinstance(start, ShapeValue) else torch.int64
    return torch.arange(vals[0], vals[1], vals[2], dtype=dtype)


CONVERTERS = (
    Converter("Identity", _identity),
    Converter("Shape", _shape),
    Converter("Size", _size),
    Converter("Constant", _constant),
    Converter("If", _if),
    Converter("ConstantOfShape", _constant_of_shape),
    Converter("Cast", _cast),
    Converter("CastLike", _cast_like, since_opset=15),
    Converter("Range", _range),
)
