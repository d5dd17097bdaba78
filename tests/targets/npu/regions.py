"""Random int8 regions for the NPU tests (each a RegionBuilder recipe with a seeded rng)."""

from __future__ import annotations

import numpy as np

from edgecc.targets.npu.region import Region, RegionBuilder


def _w(rng, shape):
    return rng.integers(-127, 128, shape, dtype=np.int8)


def _bias(rng, n, bound=4000):
    return rng.integers(-bound, bound, n).astype(np.int32)


def _scales(rng, n):
    return rng.uniform(0.001, 0.02, n).astype(np.float32)


def _zp(rng):
    return int(rng.integers(-20, 21))


def conv(rng, stride=1, padding="SAME", dilation=1, kernel=3, activation="RELU") -> Region:
    b = RegionBuilder("conv")
    x = b.input("x", (1, 12, 11, 8), rng.uniform(0.02, 0.1), _zp(rng))
    y = b.conv2d(x, _w(rng, (16, kernel, kernel, 8)), _bias(rng, 16), _scales(rng, 16),
                 out_scale=rng.uniform(0.05, 0.3), out_zero_point=_zp(rng), stride=stride,
                 padding=padding, dilation=dilation, activation=activation)
    return b.build([y])


def depthwise(rng, stride=1, padding="SAME", multiplier=1, activation="RELU6") -> Region:
    b = RegionBuilder("depthwise")
    x = b.input("x", (1, 13, 10, 8), rng.uniform(0.02, 0.1), _zp(rng))
    y = b.depthwise_conv2d(x, _w(rng, (1, 3, 3, 8 * multiplier)), _bias(rng, 8 * multiplier),
                           _scales(rng, 8 * multiplier), out_scale=rng.uniform(0.02, 0.1),
                           out_zero_point=_zp(rng), stride=stride, padding=padding,
                           depth_multiplier=multiplier, activation=activation)
    return b.build([y])


def fully_connected(rng, activation="NONE") -> Region:
    b = RegionBuilder("fc")
    x = b.input("x", (1, 64), rng.uniform(0.02, 0.1), _zp(rng))
    y = b.fully_connected(x, _w(rng, (24, 64)), _bias(rng, 24), _scales(rng, 24),
                          out_scale=rng.uniform(0.1, 0.5), out_zero_point=_zp(rng),
                          activation=activation)
    return b.build([y])


def add(rng, activation="NONE") -> Region:
    b = RegionBuilder("add")
    x1 = b.input("x1", (1, 8, 8, 16), rng.uniform(0.02, 0.1), _zp(rng))
    x2 = b.input("x2", (1, 8, 8, 16), rng.uniform(0.02, 0.1), _zp(rng))
    y = b.add(x1, x2, rng.uniform(0.03, 0.2), _zp(rng), activation=activation)
    return b.build([y])


def mul(rng) -> Region:
    b = RegionBuilder("mul")
    x1 = b.input("x1", (1, 8, 8, 16), rng.uniform(0.02, 0.1), _zp(rng))
    x2 = b.input("x2", (1, 8, 8, 16), rng.uniform(0.02, 0.1), _zp(rng))
    y = b.mul(x1, x2, rng.uniform(0.05, 0.3), _zp(rng))
    return b.build([y])


def batch_matmul(rng, batch=4, m=6, k=16, n=5) -> Region:
    """Two int8 activations multiplied (attention's Q . K^T / P . V)."""
    b = RegionBuilder("bmm")
    sa, sb = rng.uniform(0.02, 0.1), rng.uniform(0.02, 0.1)
    a = b.input("a", (batch, m, k), sa, _zp(rng))
    c = b.input("b", (batch, k, n), sb, _zp(rng))
    # output step: a typical |sum| (sqrt(k) * 74^2 for uniform int8) spans ~40 steps
    y = b.batch_matmul(a, c, sa * sb * np.sqrt(k) * 5500 / rng.uniform(20, 60), _zp(rng))
    return b.build([y])


def flatten(rng) -> Region:
    """Max pool, NHWC -> NCHW transpose, flatten, requantize: what sits between a CNN's last
    convolution and its classifier."""
    b = RegionBuilder("flatten")
    x = b.input("x", (1, 6, 4, 8), rng.uniform(0.02, 0.1), _zp(rng))
    p = b.max_pool2d(x, 2, 2)
    t = b.transpose(p, (0, 3, 1, 2))
    r = b.reshape(t, (1, 8 * 3 * 2))
    y = b.quantize(r, rng.uniform(0.01, 0.2), _zp(rng))
    return b.build([y])


def slice_concat(rng) -> Region:
    b = RegionBuilder("slice_concat")
    x = b.input("x", (1, 9, 10, 6), rng.uniform(0.02, 0.1), _zp(rng))
    s1 = b.strided_slice(x, (0, 1, 0, 0), (1, 9, 10, 6), (1, 2, 3, 1))
    s2 = b.strided_slice(x, (0, 0, 2, 1), (1, 4, 6, 5))
    c = b.concat([b.transpose(s1, (0, 2, 1, 3)), b.transpose(s2, (0, 2, 1, 3))], axis=3)
    return b.build([c])


def softmax(rng, shape=(1, 4, 16), scale=None) -> Region:
    """TFLite int8 SOFTMAX (output scale 1/256, zero point -128) over the last axis."""
    b = RegionBuilder("softmax")
    x = b.input("x", shape, float(scale or rng.uniform(0.05, 0.2)), _zp(rng))
    return b.build([b.softmax(x)])


def mean(rng, keep_dims=False) -> Region:
    b = RegionBuilder("mean")
    x = b.input("x", (1, 7, 5, 12), rng.uniform(0.02, 0.1), _zp(rng))
    return b.build([b.mean(x, rng.uniform(0.005, 0.1), _zp(rng), keep_dims=keep_dims)])


def pool(rng, kind="avg_pool2d", padding="VALID", kernel=2, stride=2) -> Region:
    b = RegionBuilder("pool")
    x = b.input("x", (1, 9, 12, 8), rng.uniform(0.02, 0.1), _zp(rng))
    y = getattr(b, kind)(x, kernel, stride, padding=padding)
    return b.build([y])


def block(rng) -> Region:
    """A MobileNetV2-style block: pointwise expand, depthwise, pointwise project, residual add,
    global average pool, reshape, classifier."""
    b = RegionBuilder("block")
    x = b.input("x", (1, 16, 16, 8), 0.05, -4)
    e = b.conv2d(x, _w(rng, (32, 1, 1, 8)), _bias(rng, 32), _scales(rng, 32), 0.08, -10,
                 activation="RELU6")
    d = b.depthwise_conv2d(e, _w(rng, (1, 3, 3, 32)), _bias(rng, 32), _scales(rng, 32), 0.06, -8,
                           activation="RELU6")
    p = b.conv2d(d, _w(rng, (8, 1, 1, 32)), _bias(rng, 8), _scales(rng, 8), 0.07, 3)
    s = b.add(x, p, 0.09, 1)
    g = b.avg_pool2d(s, 16, 16)
    f = b.reshape(g, (1, 8))
    y = b.fully_connected(f, _w(rng, (10, 8)), _bias(rng, 10), _scales(rng, 10), 0.2, 0)
    return b.build([y])


def random_inputs(region: Region, rng) -> dict[str, np.ndarray]:
    return {n: rng.integers(-128, 128, region.tensors[n].shape, dtype=np.int8)
            for n in region.inputs}


def activations(rng) -> Region:
    """A conv then every table activation in a chain (HARD_SWISH, LEAKY_RELU, GELU, TANH,
    LOGISTIC, each at its TFLite output quantization, requantized where one is fixed)."""
    b = RegionBuilder("activations")
    x = b.input("x", (1, 6, 5, 8), rng.uniform(0.02, 0.1), _zp(rng))
    c = b.conv2d(x, _w(rng, (8, 3, 3, 8)), _bias(rng, 8), _scales(rng, 8),
                 rng.uniform(0.03, 0.1), _zp(rng))
    h = b.lut(c, "hard_swish", rng.uniform(0.02, 0.06), _zp(rng))
    lr = b.lut(h, "leaky_relu", rng.uniform(0.02, 0.06), _zp(rng), alpha=rng.uniform(0, 0.5))
    g = b.lut(lr, "gelu", rng.uniform(0.02, 0.06), _zp(rng), approximate=bool(rng.integers(2)))
    t = b.quantize(b.lut(g, "tanh"), rng.uniform(0.004, 0.02), _zp(rng))
    y = b.lut(t, "logistic")
    return b.build([y])
