"""Reductions along axes: Reduce* (axes an attribute up to the opset where they became an
input -- 12 for ReduceSum, 17 for the others), ArgMax, ArgMin, TopK, CumSum."""

from __future__ import annotations

import torch

from edgecc.onnx_import.converter import Converter, T


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
                # Nothing reduced, but the element-wise part still applies (onnxruntime
                # and the reference evaluator: ReduceL1 -> |x|, ReduceSumSquare -> x*x).
                return {"l1": torch.abs, "l2": torch.abs,
                        "sumsquare": lambda t: t * t}.get(fn_name, lambda t: t)(x)
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


def _topk(ctx, x, k):
    x = T(x)
    kk = ctx.ints(1, k)[0]
    values, indices = torch.topk(x, kk, dim=ctx.attr("axis", -1),
                                 largest=bool(ctx.attr("largest", 1)),
                                 sorted=bool(ctx.attr("sorted", 1)))
    return values, indices


def _cumsum(ctx, x, axis):
    x = T(x)
    a = ctx.ints(1, axis)[0]
    if ctx.attr("reverse", 0):
        x = x.flip(a)
    out = torch.cumsum(x, a)
    if ctx.attr("exclusive", 0):
        out = out - x
    return out.flip(a) if ctx.attr("reverse", 0) else out


CONVERTERS = (
    Converter("ReduceMean", _reduce("mean", 17)),
    Converter("ReduceSum", _reduce("sum", 12)),
    Converter("ReduceMax", _reduce("max", 17)),
    Converter("ReduceMin", _reduce("min", 17)),
    Converter("ReduceProd", _reduce("prod", 17)),
    Converter("ReduceL2", _reduce("l2", 17)),
    Converter("ReduceL1", _reduce("l1", 17)),
    Converter("ReduceSumSquare", _reduce("sumsquare", 17)),
    Converter("ReduceLogSumExp", _reduce("logsumexp", 17)),
    Converter("ArgMax", _arg(torch.argmax)),
    Converter("ArgMin", _arg(torch.argmin)),
    Converter("TopK", _topk, since_opset=10),
    Converter("CumSum", _cumsum),
)
