"""Convolution, pooling, matmul, normalization and attention MIL ops in numpy.

Layouts are Core ML's: activations NC[D]HW, conv weights (C_out, C_in/groups, *K),
conv_transpose weights (C_in, C_out/groups, *K), linear weights (D_out, D_in).
``pad`` lists begin/end pairs per spatial dim: [h_begin, h_end, w_begin, w_end].

    %y = conv(x=%x, weight=%w, bias=%b, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
              dilations=[1, 1], groups=32)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ops_math import _softmax


def _ints(value, n, default):
    if value is None:
        return [default] * n
    return [int(a) for a in np.atleast_1d(value)]


def _same_pads(sizes, kernel, strides, dilations, lower: bool):
    pads = []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        out = math.ceil(n / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small = total // 2
        pads += [total - small, small] if lower else [small, total - small]
    return pads


def _pads(v, sizes, kernel, strides, dilations):
    """Begin/end pads per spatial dim from MIL's pad_type and pad."""
    pad_type = v.get("pad_type") or "valid"
    if pad_type == "valid":
        return [0] * (2 * len(sizes))
    if pad_type == "custom":
        return _ints(v.get("pad"), 2 * len(sizes), 0)
    if pad_type in ("same", "same_lower"):
        return _same_pads(sizes, kernel, strides, dilations, lower=pad_type == "same_lower")
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _windows(x, kernel, strides, dilations):
    """(N, C, *out, *kernel) view of the (already padded) input's sliding windows."""
    nsp = len(kernel)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(x, span, axis=tuple(range(2, 2 + nsp)))
    pick = ((slice(None),) * 2 + tuple(slice(None, None, s) for s in strides)
            + tuple(slice(None, None, d) for d in dilations))
    return win[pick]


def _pad_spatial(x, pads, value=0.0):
    width = [(0, 0), (0, 0)] + [(pads[2 * i], pads[2 * i + 1]) for i in range(x.ndim - 2)]
    if not any(b or e for b, e in width):
        return x
    if any(b < 0 or e < 0 for b, e in width):  # negative pads crop
        crop = tuple(slice(-b if b < 0 else 0, x.shape[i] + e if e < 0 else None)
                     for i, (b, e) in enumerate(width))
        x = x[crop]
        width = [(max(b, 0), max(e, 0)) for b, e in width]
    return np.pad(x, width, constant_values=value)


def _conv_core(x, w, strides, dilations, groups):
    """Grouped N-d correlation of a padded input: x (N, C, *S), w (O, C/g, *K)."""
    nsp = x.ndim - 2
    kernel = w.shape[2:]
    win = _windows(x, kernel, strides, dilations)  # (N, C, *out, *K)
    n, c = x.shape[:2]
    out_sp = win.shape[2:2 + nsp]
    o = w.shape[0]
    g = groups
    if g == 1:
        # one BLAS contraction over (C, *K)
        axes_x = [1] + list(range(2 + nsp, 2 + 2 * nsp))
        axes_w = list(range(1, 2 + nsp))
        y = np.tensordot(win, w, axes=(axes_x, axes_w))  # (N, *out, O)
        return np.moveaxis(y, -1, 1)
    win = win.reshape(n, g, c // g, *out_sp, *kernel)
    wg = w.reshape(g, o // g, c // g, *kernel)
    letters = "dehijk"[:nsp]  # spatial out (not n, g, c, o)
    kern = "pqrstu"[:nsp]
    y = np.einsum(f"ngc{letters}{kern},goc{kern}->ngo{letters}", win, wg, optimize=True)
    return y.reshape(n, o, *out_sp)


def conv(v, op):
    x, w = np.asarray(v["x"]), np.asarray(v["weight"], dtype=np.float32)
    nsp = x.ndim - 2
    strides = _ints(v.get("strides"), nsp, 1)
    dilations = _ints(v.get("dilations"), nsp, 1)
    groups = int(v.get("groups", 1))
    pads = _pads(v, x.shape[2:], w.shape[2:], strides, dilations)
    y = _conv_core(_pad_spatial(x, pads), w, strides, dilations, groups)
    if v.get("bias") is not None:
        y = y + np.asarray(v["bias"]).reshape((1, -1) + (1,) * nsp)
    return y


def conv_transpose(v, op):
    """Transposed convolution: dilate the input by the strides, pad by (k-1)*d - pad, and
    correlate with the flipped, in/out-swapped kernel."""
    x, w = np.asarray(v["x"]), np.asarray(v["weight"], dtype=np.float32)
    nsp = x.ndim - 2
    strides = _ints(v.get("strides"), nsp, 1)
    dilations = _ints(v.get("dilations"), nsp, 1)
    groups = int(v.get("groups", 1))
    kernel = w.shape[2:]
    n, c = x.shape[:2]
    cin, cout_g = w.shape[:2]
    # (C_in, C_out/g, *K) -> (C_out, C_in/g, *K), flipped spatially
    wg = w.reshape(groups, cin // groups, cout_g, *kernel)
    wg = np.swapaxes(wg, 1, 2).reshape(groups * cout_g, cin // groups, *kernel)
    wg = np.flip(wg, axis=tuple(range(2, 2 + nsp)))
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(x.shape[2:], strides, kernel,
                                                                  dilations)]
    pad_type = v.get("pad_type") or "valid"
    if pad_type == "custom":
        pads = _ints(v.get("pad"), 2 * nsp, 0)
    elif pad_type == "valid":
        pads = [0] * (2 * nsp)
    else:  # same: output = input * stride
        pads = []
        for f, i, s in zip(full, x.shape[2:], strides):
            total = max(f - i * s, 0)
            small = total // 2
            pads += [total - small, small] if pad_type == "same_lower" else [small, total - small]
    out_shape = v.get("output_shape")
    dilated = [(i - 1) * s + 1 for i, s in zip(x.shape[2:], strides)]
    dil = np.zeros((n, c) + tuple(dilated), dtype=x.dtype)
    dil[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)] = x
    edge = [(k - 1) * d for k, d in zip(kernel, dilations)]
    y = _conv_core(_pad_spatial(dil, [e for e in edge for _ in (0, 1)]), wg, [1] * nsp,
                   dilations, groups)
    crop = [slice(None), slice(None)]
    for i in range(nsp):
        begin, end = pads[2 * i], pads[2 * i + 1]
        stop = y.shape[2 + i] - end
        if out_shape is not None:
            stop = begin + int(np.atleast_1d(out_shape)[-nsp + i])
        crop.append(slice(begin, stop))
    y = y[tuple(crop)]
    if out_shape is not None and any(a < b for a, b in zip(y.shape[2:],
                                                            np.atleast_1d(out_shape)[-nsp:])):
        extra = [int(b) - a for a, b in zip(y.shape[2:], np.atleast_1d(out_shape)[-nsp:])]
        y = np.pad(y, [(0, 0), (0, 0)] + [(0, e) for e in extra])
    if v.get("bias") is not None:
        y = y + np.asarray(v["bias"]).reshape((1, -1) + (1,) * nsp)
    return y


def linear(v, op):
    x, w = np.asarray(v["x"]), np.asarray(v["weight"])
    # one 2-D BLAS product (a batched matmul with a transposed view skips BLAS)
    y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(x.shape[:-1] + (w.shape[0],))
    return y + v["bias"] if v.get("bias") is not None else y


def matmul(v, op):
    x, y = np.asarray(v["x"]), np.asarray(v["y"])
    if v.get("transpose_x") and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if v.get("transpose_y") and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _pool_geometry(v, x):
    nsp = x.ndim - 2
    kernel = _ints(v["kernel_sizes"], nsp, 1)
    strides = _ints(v.get("strides"), nsp, 1)
    pads = _pads(v, x.shape[2:], kernel, strides, [1] * nsp)
    # ceil_mode (Core ML's rule, as coremltools' type inference states it): a last, partial
    # window is kept; with padding it must start inside the input or its begin padding (as in
    # PyTorch); without padding Core ML keeps it even when it starts past the end (an empty
    # window: -inf for max_pool, 0 for avg_pool here; PyTorch drops it). The overhang past the
    # end padding never counts in an average.
    extra = []
    for i, (n, k, s) in enumerate(zip(x.shape[2:], kernel, strides)):
        padded = n + pads[2 * i] + pads[2 * i + 1]
        if v.get("ceil_mode"):
            out = -(-(padded - k) // s) + 1
            if (out - 1) * s >= n + pads[2 * i] and (pads[2 * i] or pads[2 * i + 1]):
                out -= 1
        else:
            out = (padded - k) // s + 1
        extra.append(max((out - 1) * s + k - padded, 0))
    return kernel, strides, pads, extra


def max_pool(v, op):
    x = np.asarray(v["x"])
    kernel, strides, pads, extra = _pool_geometry(v, x)
    full = [p + (extra[i // 2] if i % 2 else 0) for i, p in enumerate(pads)]
    xp = _pad_spatial(x, full, value=-np.inf)
    win = _windows(xp, kernel, strides, [1] * len(kernel))
    return win.max(axis=tuple(range(-len(kernel), 0)))


def avg_pool(v, op):
    x = np.asarray(v["x"])
    nsp = x.ndim - 2
    kernel, strides, pads, extra = _pool_geometry(v, x)
    full = [p + (extra[i // 2] if i % 2 else 0) for i, p in enumerate(pads)]
    axes = tuple(range(-nsp, 0))
    total = _windows(_pad_spatial(x, full), kernel, strides, [1] * nsp).sum(axis=axes)
    # the count of each window: ones over the input (and, unless excluded, the declared pads)
    ones = np.ones((1, 1) + x.shape[2:], dtype=np.float32)
    if v.get("exclude_padding_from_average"):
        counted = _pad_spatial(ones, full)
    else:
        counted = _pad_spatial(_pad_spatial(ones, pads, value=1.0),
                               [0 if i % 2 == 0 else extra[i // 2] for i in range(2 * nsp)])
    count = _windows(counted, kernel, strides, [1] * nsp).sum(axis=axes)
    return total / np.maximum(count, 1)  # an empty ceil_mode window (see above) averages to 0


def l2_pool(v, op):
    x = np.asarray(v["x"])
    kernel, strides, pads, extra = _pool_geometry(v, x)
    full = [p + (extra[i // 2] if i % 2 else 0) for i, p in enumerate(pads)]
    win = _windows(_pad_spatial(x * x, full), kernel, strides, [1] * len(kernel))
    return np.sqrt(win.sum(axis=tuple(range(-len(kernel), 0))))


def _channel_shape(x, value):
    return np.asarray(value).reshape((1, -1) + (1,) * (x.ndim - 2))


def _scale_shift(y, x, v):
    """``y * gamma + beta`` per channel, each only where the op has it."""
    if v.get("gamma") is not None:
        y = y * _channel_shape(x, v["gamma"])
    if v.get("beta") is not None:
        y = y + _channel_shape(x, v["beta"])
    return y


def batch_norm(v, op):
    x = np.asarray(v["x"])
    mean, var = _channel_shape(x, v["mean"]), _channel_shape(x, v["variance"])
    y = (x - mean) / np.sqrt(var + float(v.get("epsilon", 1e-5)))
    return _scale_shift(y, x, v)


def instance_norm(v, op):
    x = np.asarray(v["x"], dtype=np.float64)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(v.get("epsilon", 1e-5)))
    return _scale_shift(y, x, v)


def layer_norm(v, op):
    x = np.asarray(v["x"], dtype=np.float64)
    axes = v.get("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(
        int(a) % x.ndim for a in np.atleast_1d(axes))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(v.get("epsilon", 1e-5)))
    # gamma/beta have the shape of the normalized dims (the trailing ones)
    if v.get("gamma") is not None:
        y = y * np.asarray(v["gamma"])
    if v.get("beta") is not None:
        y = y + np.asarray(v["beta"])
    return y


def l2_norm(v, op):
    x = np.asarray(v["x"], dtype=np.float64)
    axes = tuple(range(max(x.ndim - 3, 0), x.ndim))  # the last three (or fewer) dims
    norm = np.sqrt(np.sum(x * x, axis=axes, keepdims=True))
    return x / np.maximum(norm, float(v.get("epsilon", 1e-6)))


def scaled_dot_product_attention(v, op):
    """softmax(Q K^T / sqrt(d) + mask) V; a bool mask keeps True positions."""
    q = np.asarray(v["query"], dtype=np.float64)
    k = np.asarray(v["key"], dtype=np.float64)
    val = np.asarray(v["value"], dtype=np.float64)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    mask = v.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    return np.matmul(_softmax({"x": scores, "axis": -1}, None), val)


def upsample_nearest_neighbor(v, op):
    x = np.asarray(v["x"])
    sh, sw = float(v.get("scale_factor_height", 1)), float(v.get("scale_factor_width", 1))
    h, w = x.shape[-2:]
    oh, ow = int(math.floor(h * sh)), int(math.floor(w * sw))
    rows = np.minimum(np.floor(np.arange(oh) / sh).astype(int), h - 1)
    cols = np.minimum(np.floor(np.arange(ow) / sw).astype(int), w - 1)
    return x[..., rows[:, None], cols[None, :]]


def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Source coordinates of the output samples along one axis (MIL's sampling modes)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = np.full(1, (n_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (n_in - 1) / (n_out - 1)
    elif mode == "UNALIGN_CORNERS":  # half-pixel centers
        g = (i + 0.5) * n_in / n_out - 0.5
    elif mode == "DEFAULT":
        g = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    elif mode == "ASYMMETRIC":  # i * in / out (no half-pixel offset)
        g = i * n_in / n_out
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    return np.clip(g, 0, n_in - 1)


def _interp_axis(x, axis: int, grid: np.ndarray):
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    w = (grid - lo).reshape((-1,) + (1,) * (x.ndim - 1 - axis % x.ndim))
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    return a + (b - a) * w


def _bilinear(x, out_h: int, out_w: int, mode: str):
    x = np.asarray(x, dtype=np.float64)
    y = _interp_axis(x, -2, _grid(x.shape[-2], out_h, mode))
    return _interp_axis(y, -1, _grid(x.shape[-1], out_w, mode))


def upsample_bilinear(v, op):
    x = np.asarray(v["x"])
    out_h = int(math.floor(x.shape[-2] * float(v.get("scale_factor_height", 1))))
    out_w = int(math.floor(x.shape[-1] * float(v.get("scale_factor_width", 1))))
    align = bool(v.get("align_corners", True))
    half = v.get("half_pixel_centers")
    half = (not align) if half is None else bool(half)
    mode = "STRICT_ALIGN_CORNERS" if align else "UNALIGN_CORNERS" if half else "ASYMMETRIC"
    return _bilinear(x, out_h, out_w, mode)


def resize_bilinear(v, op):
    return _bilinear(v["x"], int(v.get("target_size_height", 1)),
                     int(v.get("target_size_width", 1)), v.get("sampling_mode") or "DEFAULT")


OPS = {
    "upsample_bilinear": upsample_bilinear, "resize_bilinear": resize_bilinear,
    "conv": conv, "conv_transpose": conv_transpose, "linear": linear, "matmul": matmul,
    "max_pool": max_pool, "avg_pool": avg_pool, "l2_pool": l2_pool,
    "batch_norm": batch_norm, "instance_norm": instance_norm, "layer_norm": layer_norm,
    "l2_norm": l2_norm, "scaled_dot_product_attention": scaled_dot_product_attention,
    "upsample_nearest_neighbor": upsample_nearest_neighbor,
}
