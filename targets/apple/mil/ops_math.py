"""Elementwise, activation and reduction MIL ops in numpy.

Each function takes ``(values, op)``: the op's inputs by MIL parameter name (fp16 widened
to fp32; absent optional inputs missing) and the MIL op; it returns the result, which the
interpreter casts to the op's output type.

    %y = gelu(x=%x, mode="TANH_APPROXIMATION")   ->   gelu({"x": x, "mode": "TANH..."}, op)
"""

from __future__ import annotations

import math

import numpy as np

def erf(x) -> np.ndarray:
    """Gauss error function in float64 (torch's, a dependency of edgecc; numpy has none)."""
    import torch

    return torch.special.erf(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def _binary(fn):
    return lambda v, op: fn(v["x"], v["y"])


def _unary(fn):
    return lambda v, op: fn(v["x"])


def _eps(v, default):
    return default if v.get("epsilon") is None else v["epsilon"]


def _floor_div(x, y):
    return np.floor_divide(x, y)


def _real_div(x, y):
    if np.issubdtype(np.asarray(x).dtype, np.integer) and np.issubdtype(
            np.asarray(y).dtype, np.integer):
        return np.asarray(x) / np.asarray(y)  # MIL real_div of ints: float, then cast by type
    return np.divide(x, y)


def _mod(x, y):
    return np.mod(x, y)


def _pow(x, y):
    return np.power(np.asarray(x, dtype=np.float64) if np.issubdtype(np.asarray(x).dtype,
                    np.floating) else x, y)


BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": _real_div,
    "floor_div": _floor_div, "mod": _mod, "pow": _pow, "maximum": np.maximum,
    "minimum": np.minimum, "equal": np.equal, "not_equal": np.not_equal, "less": np.less,
    "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # stable for any x


def _softplus(x):
    x = np.asarray(x, dtype=np.float64)
    return np.logaddexp(0.0, x)


UNARY = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "round": np.round, "sign": np.sign,
    "sqrt": np.sqrt, "exp": np.exp, "exp2": np.exp2, "erf": erf, "tanh": np.tanh,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "atanh": np.arctanh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "square": np.square,
    "logical_not": np.logical_not, "relu": lambda x: np.maximum(x, 0).astype(np.asarray(x).dtype),
    "relu6": lambda x: np.clip(x, 0, 6), "sigmoid": _sigmoid, "silu": lambda x: x * _sigmoid(x),
    "softplus": _softplus, "softsign": lambda x: x / (1 + np.abs(x)),
}


def _rsqrt(v, op):
    return 1.0 / np.sqrt(v["x"] + _eps(v, 1e-12))


def _inverse(v, op):
    return 1.0 / (v["x"] + _eps(v, 1e-4))


def _log(v, op):
    return np.log(v["x"] + _eps(v, 1e-45))


def _clip(v, op):
    return np.minimum(np.maximum(v["x"], v["alpha"]), v["beta"])


def _gelu(v, op):
    x = np.asarray(v["x"], dtype=np.float64)
    mode = v.get("mode") or "EXACT"
    if mode == "EXACT":
        return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise ValueError(f"unknown gelu mode {mode!r}")


def _leaky_relu(v, op):
    x = v["x"]
    return np.where(x >= 0, x, x * v.get("alpha", 0.01))


def _elu(v, op):
    x = np.asarray(v["x"], dtype=np.float64)
    return np.where(x > 0, x, v.get("alpha", 1.0) * np.expm1(np.minimum(x, 0)))


def _prelu(v, op):
    x, alpha = v["x"], np.asarray(v["alpha"])
    shape = [1] * x.ndim
    shape[1] = alpha.size  # one slope per channel (axis 1)
    return np.where(x >= 0, x, x * alpha.reshape(shape))


def _sigmoid_hard(v, op):
    return np.clip(v.get("alpha", 0.2) * v["x"] + v.get("beta", 0.5), 0.0, 1.0)


def _linear_activation(v, op):
    return v.get("alpha", 1.0) * v["x"] + v.get("beta", 0.0)


def _scaled_tanh(v, op):
    return v.get("alpha", 1.0) * np.tanh(v.get("beta", 1.0) * v["x"])


def _clamped_relu(v, op):
    x = v["x"]
    return np.minimum(np.where(x >= 0, x, v.get("alpha", 0.0) * x), v.get("beta", 6.0))


def _softplus_parametric(v, op):
    x = v["x"]
    shape = [1] * x.ndim
    shape[1] = -1
    alpha = np.asarray(v["alpha"]).reshape(shape)
    beta = np.asarray(v["beta"]).reshape(shape)
    return alpha * _softplus(beta * x)


def _softmax(v, op):
    x = np.asarray(v["x"], dtype=np.float64)
    axis = int(v.get("axis", -1))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _axes(v):
    axes = v.get("axes")
    return None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))


def _reduce(fn):
    def run(v, op):
        keep = bool(v.get("keep_dims", False))
        return fn(v["x"], axis=_axes(v), keepdims=keep)
    return run


def _l2(x, axis, keepdims):
    return np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=axis, keepdims=keepdims))


def _log_sum_exp(x, axis, keepdims):
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


REDUCE = {
    "reduce_mean": lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims,
                                                     dtype=np.float64),
    "reduce_sum": lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims,
                                                   dtype=np.float64 if np.issubdtype(
                                                       np.asarray(x).dtype, np.floating) else None),
    "reduce_max": np.max, "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": _l2,
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(np.square(x, dtype=np.float64),
                                                          axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims,
                                                              dtype=np.float64)),
    "reduce_log_sum_exp": _log_sum_exp,
}


def _reduce_arg(fn):
    def run(v, op):
        axis = int(v.get("axis", -1))
        out = fn(v["x"], axis=axis)
        return np.expand_dims(out, axis) if v.get("keep_dims", False) else out
    return run


OPS = {
    **{k: _binary(f) for k, f in BINARY.items()},
    **{k: _unary(f) for k, f in UNARY.items()},
    **{k: _reduce(f) for k, f in REDUCE.items()},
    "rsqrt": _rsqrt, "inverse": _inverse, "log": _log, "clip": _clip,
    "thresholded_relu": lambda v, op: np.where(v["x"] > v.get("alpha", 1.0), v["x"], 0),
    "gelu": _gelu, "leaky_relu": _leaky_relu, "elu": _elu, "prelu": _prelu,
    "sigmoid_hard": _sigmoid_hard, "linear_activation": _linear_activation,
    "scaled_tanh": _scaled_tanh, "clamped_relu": _clamped_relu,
    "softplus_parametric": _softplus_parametric, "softmax": _softmax,
    "reduce_argmax": _reduce_arg(np.argmax), "reduce_argmin": _reduce_arg(np.argmin),
}
