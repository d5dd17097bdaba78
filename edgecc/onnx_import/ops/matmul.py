"""Matrix products: Gemm (``F.linear`` when it is one, so fusion passes see a linear layer),
MatMul, Einsum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgecc.onnx_import.converter import Converter, T


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


def _matmul(ctx, a, b):
    return torch.matmul(T(a), T(b))


def _einsum(ctx, *xs):
    return torch.einsum(ctx.attr("equation"), *[T(x) for x in xs])


CONVERTERS = (
    Converter("Gemm", _gemm),
    Converter("MatMul", _matmul),
    Converter("Einsum", _einsum, since_opset=12),
)
