"""Activations with attributes or opset-dependent semantics: HardSwish, HardSigmoid,
LeakyRelu, Elu, Selu, PRelu, Shrink, Gelu, Clip, Softmax, LogSoftmax.

Softmax and LogSoftmax changed meaning at opset 13 (before: over the input flattened from
``axis`` on; since: along ``axis``), hence two entries each.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgecc.onnx_import.converter import Converter, T


def _hardswish(ctx, x):
    return F.hardswish(T(x))


def _hardsigmoid(ctx, x):
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    return torch.clamp(T(x) * alpha + beta, 0.0, 1.0)


def _leaky(ctx, x):
    return F.leaky_relu(T(x), ctx.attr("alpha", 0.01))


def _elu(ctx, x):
    return F.elu(T(x), ctx.attr("alpha", 1.0))


def _selu(ctx, x):
    alpha, gamma = ctx.attr("alpha", 1.67326319217681884765625), ctx.attr("gamma", 1.05070102214813232421875)
    x = T(x)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def _prelu(ctx, x, slope):
    x, slope = T(x), T(slope)
    if slope.dim() == 1 and x.dim() > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
        # Per-channel slopes from opset < 7 models (kept by the version converter).
        slope = slope.reshape(-1, *([1] * (x.dim() - 2)))
    return torch.where(x >= 0, x, x * slope)


def _shrink(ctx, x):
    x = T(x)
    lambd, bias = ctx.attr("lambd", 0.5), ctx.attr("bias", 0.0)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


def _gelu(ctx, x):
    return F.gelu(T(x), approximate=ctx.attr("approximate", "none"))


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


def _softmax(ctx, x):
    return torch.softmax(T(x), ctx.attr("axis", -1))


def _log_softmax(ctx, x):
    return torch.log_softmax(T(x), ctx.attr("axis", -1))


def _flatten_softmax(fn):
    def convert(ctx, x):  # opset < 13: softmax over the flattened tail from ``axis``
        x = T(x)
        axis = ctx.attr("axis", 1) % x.dim()
        flat = x.reshape(math.prod(x.shape[:axis]) if axis else 1, -1)
        return fn(flat, -1).reshape(x.shape)

    return convert


CONVERTERS = (
    Converter("HardSwish", _hardswish, since_opset=14),
    Converter("HardSigmoid", _hardsigmoid),
    Converter("LeakyRelu", _leaky),
    Converter("Elu", _elu),
    Converter("Selu", _selu),
    Converter("PRelu", _prelu),
    Converter("Shrink", _shrink, since_opset=9),
    Converter("Gelu", _gelu, since_opset=20),
    Converter("Clip", _clip, since_opset=11),
    Converter("Softmax", _flatten_softmax(torch.softmax), until_opset=12),
    Converter("Softmax", _softmax, since_opset=13),
    Converter("LogSoftmax", _flatten_softmax(torch.log_softmax), until_opset=12),
    Converter("LogSoftmax", _log_softmax, since_opset=13),
)
