"""Layout operators: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Slice, Split,
Expand, Tile, Pad.

Those that ONNX exporters apply to shapes (Squeeze, Unsqueeze, Concat, Slice) keep a
:class:`ShapeValue` symbolic rather than materializing it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from edgecc.onnx_import.converter import Converter, ShapeValue, T


def _reshape(ctx, x, shape):
    dims = ctx.ints(1, shape)
    allowzero = ctx.attr("allowzero", 0)
    x = T(x)
    if not allowzero:
        dims = [x.shape[i] if (isinstance(d, int) and d == 0) else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(ctx, x):
    x = T(x)
    axis = ctx.attr("axis", 1) % max(x.dim(), 1) if ctx.attr("axis", 1) < 0 else ctx.attr("axis", 1)
    lead = math.prod(x.shape[:axis]) if axis else 1
    return x.reshape(lead, -1)


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


def _squeeze(ctx, x, axes=None):
    axes = _axes(ctx, 1, axes)
    if isinstance(x, ShapeValue):
        return ShapeValue(x.values, scalar=True) if len(x.values) == 1 else x
    if axes is None:
        return x.squeeze()
    return x.squeeze([a % x.dim() for a in axes]) if axes else x


def _unsqueeze(ctx, x, axes=None):
    axes = _axes(ctx, 1, axes)
    if isinstance(x, ShapeValue) and x.scalar and axes in ([0], [-1]):
        return ShapeValue(x.values)
    x = T(x)
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


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
        else:  # negative steps: ONNX's clamping, then a slice of the flipped axis
            size = x.shape[axis]
            a = a + size if a < 0 else a
            a = max(0, min(a, size - 1))
            b = b + size if b < 0 else b
            b = max(-1, min(b, size - 1))
            flips.append((axis, size - 1 - a, size - 1 - b, -c))
    out = x[tuple(index)]
    for axis, lo, hi, c in flips:
        idx = [slice(None)] * out.dim()
        idx[axis] = slice(lo, max(hi, lo), c)
        out = out.flip(axis)[tuple(idx)]
    return out


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


def _expand(ctx, x, shape):
    x = T(x)
    dims = ctx.ints(1, shape)
    rank = max(x.dim(), len(dims))
    dims = [1] * (rank - len(dims)) + list(dims)
    xs = [1] * (rank - x.dim()) + list(x.shape)
    target = [a if (isinstance(b, int) and b == 1) else b for a, b in zip(xs, dims)]
    return x.reshape(xs).expand(target) if rank > x.dim() else x.expand(target)


def _tile(ctx, x, repeats):
    return T(x).repeat(ctx.ints(1, repeats))


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
    # torch pads these modes only on the trailing 1-3 axes of a batched tensor: pad one
    # axis at a time, moved last and viewed as (rows, 1, length). (Trimming the pads to the
    # trailing rank-2 axes dropped the pads of the leading ones without a word.)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    for a in range(rank):
        b, e = torch_pad[2 * (rank - 1 - a)], torch_pad[2 * (rank - 1 - a) + 1]
        if isinstance(b, int) and isinstance(e, int) and b == 0 and e == 0:
            continue
        moved = x.movedim(a, -1)
        lead = list(moved.shape[:-1])
        flat = F.pad(moved.reshape(-1, 1, moved.shape[-1]), [b, e], mode=torch_mode)
        x = flat.reshape(*lead, flat.shape[-1]).movedim(-1, a)
    return x


CONVERTERS = (
    Converter("Reshape", _reshape),
    Converter("Flatten", _flatten),
    Converter("Transpose", _transpose),
    Converter("Squeeze", _squeeze),
    Converter("Unsqueeze", _unsqueeze),
    Converter("Concat", _concat),
    Converter("Slice", _slice, since_opset=10),
    Converter("Split", _split),
    Converter("Expand", _expand),
    Converter("Tile", _tile),
    Converter("Pad", _pad),
)
