"""Neural-network layers: Conv, ConvTranspose, pooling (Max, Average, Global), normalization
(BatchNormalization, InstanceNormalization, LayerNormalization, LRN) and Resize.

ONNX pads may be asymmetric (``auto_pad=SAME_*`` or explicit begin != end); torch's
convolution and pooling take symmetric padding, so asymmetric padding is applied up front
with ``F.pad``. :func:`conv` is shared with the quantized converters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from edgecc.onnx_import.converter import Converter, ShapeValue, T


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


def conv(ctx, x, w, b=None):
    """ONNX Conv (any spatial rank, groups, dilations, SAME / explicit pads)."""
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


def _conv_transpose(ctx, x, w, b=None):
    x, w = T(x), T(w)
    n = w.dim() - 2
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    pads = list(ctx.attr("pads", [0] * 2 * n))
    out_pad = list(ctx.attr("output_padding", [0] * n))
    if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or ctx.attr("output_shape"):
        raise NotImplementedError("ConvTranspose with auto_pad SAME_* or output_shape")
    if ctx.attr("auto_pad", "NOTSET") == "VALID":
        pads = [0] * 2 * n
    if pads[:n] == pads[n:]:
        return torch.ops.aten.convolution(x, w, T(b), strides, pads[:n], dilations, True,
                                          out_pad, ctx.attr("group", 1))
    # Asymmetric pads: the unpadded result, cropped by each side's pad.
    full = torch.ops.aten.convolution(x, w, T(b), strides, [0] * n, dilations, True, out_pad,
                                      ctx.attr("group", 1))
    index = [slice(None), slice(None)] + [slice(p, full.shape[2 + i] - e)
                                          for i, (p, e) in enumerate(zip(pads[:n], pads[n:]))]
    return full[tuple(index)]


def _batch_norm(ctx, x, scale, bias, mean, var):
    return F.batch_norm(T(x), T(mean), T(var), T(scale), T(bias), False, 0.0,
                        ctx.attr("epsilon", 1e-5))


def _instance_norm(ctx, x, scale, bias):
    return F.instance_norm(T(x), weight=T(scale), bias=T(bias), eps=ctx.attr("epsilon", 1e-5))


def _layer_norm(ctx, x, scale, bias=None):
    x = T(x)
    axis = ctx.attr("axis", -1) % x.dim()
    shape = list(x.shape[axis:])
    out = F.layer_norm(x, shape, T(scale), T(bias), ctx.attr("epsilon", 1e-5))
    return out if len(ctx.node.output) == 1 else (out, None, None)


def _pool_args(ctx, x):
    kernel = list(ctx.attr("kernel_shape"))
    n = len(kernel)
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    begin, end = _conv_padding(ctx, x, kernel, strides, dilations)
    return kernel, strides, dilations, begin, end


def _explicit(kernel, begin, end) -> bool:
    """Pads torch's pooling cannot take: asymmetric, or over half the kernel (ONNX allows
    any pad below the kernel)."""
    return begin != end or any(b > k // 2 for b, k in zip(begin, kernel))


def _onnx_length(size, k, s, d, pb, pe, ceil):
    """ONNX's pooled length; in ceil mode a last window starting in the end padding is
    dropped (as onnxruntime and torch do)."""
    span = size + pb + pe - ((k - 1) * d + 1)
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= size + pb else out


def _crop_to_onnx(y, x, kernel, strides, dilations, begin, end, ceil):
    """With the pads applied up front torch counts them as input, so in ceil mode it may
    add a last window that starts in the end padding: cut back to ONNX's length."""
    for i, (k, s, d, pb, pe) in enumerate(zip(kernel, strides, dilations, begin, end)):
        want = _onnx_length(x.shape[2 + i], k, s, d, pb, pe, ceil)
        if y.shape[2 + i] != want:
            y = y.narrow(2 + i, 0, want)
    return y


def _max_pool(ctx, x):
    x = T(x)
    kernel, strides, dilations, begin, end = _pool_args(ctx, x)
    n = len(kernel)
    ceil = bool(ctx.attr("ceil_mode", 0))
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    if not _explicit(kernel, begin, end):
        return fn(x, kernel, strides, begin, dilations, ceil_mode=ceil)
    padded, zeros = _pad_explicitly(x, begin, end, float("-inf"))
    y = fn(padded, kernel, strides, zeros, dilations, ceil_mode=ceil)
    return _crop_to_onnx(y, x, kernel, strides, dilations, begin, end, ceil)


def _avg_pool(ctx, x):
    x = T(x)
    kernel, strides, dilations, begin, end = _pool_args(ctx, x)
    n = len(kernel)
    include = bool(ctx.attr("count_include_pad", 0))
    ceil = bool(ctx.attr("ceil_mode", 0))
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    if not _explicit(kernel, begin, end):
        return fn(x, kernel, strides, begin, ceil_mode=ceil, count_include_pad=include)
    padded, zeros = _pad_explicitly(x, begin, end)
    total = fn(padded, kernel, strides, zeros, ceil_mode=ceil, count_include_pad=True)
    if not include:
        # Padding applied up front is data to torch: divide by the share of each window
        # that is real input (the pooled mask of ones), not by the window size.
        ones, _ = _pad_explicitly(x.new_ones((1, 1, *x.shape[2:])), begin, end)
        total = total / fn(ones, kernel, strides, zeros, ceil_mode=ceil, count_include_pad=True)
    return _crop_to_onnx(total, x, kernel, strides, dilations, begin, end, ceil)


def _gap(ctx, x):
    x = T(x)
    return x.mean(list(range(2, x.dim())), keepdim=True)


def _gmp(ctx, x):
    x = T(x)
    return x.amax(list(range(2, x.dim())), keepdim=True)


def _lrn(ctx, x):
    """ONNX's window of channel c is [c - floor((size-1)/2), c + ceil((size-1)/2)];
    torch's local_response_norm puts the extra channel of an even window before c instead
    of after, so the sum of squares is taken here, with ONNX's window."""
    x = T(x)
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    front = (size - 1) // 2
    sq = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)
    sq = F.pad(sq, [0, 0, front, size - 1 - front])
    mean = F.avg_pool2d(sq, (size, 1), stride=1).reshape(x.shape)
    return x / (mean * alpha + bias).pow(beta)


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


CONVERTERS = (
    Converter("Conv", conv),
    Converter("ConvTranspose", _conv_transpose),
    Converter("MaxPool", _max_pool),
    Converter("AveragePool", _avg_pool),
    Converter("GlobalAveragePool", _gap),
    Converter("GlobalMaxPool", _gmp),
    Converter("BatchNormalization", _batch_norm),
    Converter("InstanceNormalization", _instance_norm),
    Converter("LayerNormalization", _layer_norm, since_opset=17),
    Converter("LRN", _lrn),
    Converter("Resize", _resize, since_opset=11),
)
