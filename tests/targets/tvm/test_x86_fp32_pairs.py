"""1x1 stride-1 convolutions on large maps in items of several panel pairs
(``edgecc_x86_fp32_conv_pairs`` = pairs per item, 1 a pair per item; AVX-512, maps that
prefetch, ``edgecc_x86_fp32_prefetch_bytes``): the call takes it (path 23 counts it: a silent
fallback fails), bit-identical to a pair per item at every item size, within 1e-5 relative of
PyTorch float64; maps whose pixels are not a multiple of the item (the tail runs the pair
items), a residual, a clamp, output channels not a multiple of the micro-tile's 12, batch 2."""

import ctypes

import numpy as np
import pytest

from edgecc.targets.tvm import lowering, x86_fp32
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="the pair items run on AVX-512 only"),
]

PAIRS_PATH = 23


def _path(kernels, i: int) -> int:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    return int(kernels[0].get_function(PATH_QUERY)(i))


def _conv_with(kernels, pairs: int, *args, **kwargs) -> tuple[np.ndarray, int]:
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_conv_pairs")
    old, var.value = var.value, pairs
    try:
        before = _path(kernels, PAIRS_PATH)
        out = _conv(kernels, *args, **kwargs)
        return out, _path(kernels, PAIRS_PATH) - before
    finally:
        var.value = old


# (c, oc, h, w, residual): MobileNetV2-224's expand / project shapes (56x56: 3136 pixels, not a
# multiple of 64 or 128), a map with a partial last panel, 31 output channels (tiles 11+10+10)
SHAPES = [(16, 96, 56, 56, False), (48, 24, 61, 67, True), (40, 31, 64, 64, False), (96, 16, 56, 56, True),
          (8, 48, 112, 112, True)]


@pytest.mark.parametrize("c,oc,h,w,residual", SHAPES)
def test_pair_items_equal_a_pair_per_item(kernels, c, oc, h, w, residual):
    rng = np.random.default_rng(c * oc + h)
    x = rng.standard_normal((2, c, h, w), np.float32)
    wt = rng.standard_normal((oc, c, 1, 1), np.float32)
    b = rng.standard_normal(oc, np.float32)
    res = rng.standard_normal((2, oc, h, w), np.float32) if residual else None
    conv = dict(res=res, lo=-2.0, hi=3.0)
    single, n1 = _conv_with(kernels, 1, x, wt, b, **conv)
    assert n1 == 0
    for pairs in (2, 3, 4, 8):
        out, n = _conv_with(kernels, pairs, x, wt, b, **conv)
        assert n == 1, pairs  # the pair items ran
        assert np.array_equal(out, single), pairs
    ref = _torch_conv(x, wt, b, 1, 0, res=res, lo=-2.0, hi=3.0)
    assert np.abs(single - ref).max() <= 1e-5 * np.abs(ref).max()


def test_small_maps_keep_a_pair_per_item(kernels):
    """Maps below the prefetch size (input + output < 1 MiB) keep the items they had."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 16, 32, 32), np.float32)
    wt = rng.standard_normal((32, 16, 1, 1), np.float32)
    b = rng.standard_normal(32, np.float32)
    _, n = _conv_with(kernels, 4, x, wt, b)
    assert n == 0


def test_many_input_channels_keep_a_pair_per_item(kernels):
    """1x1s of more than 96 input channels (the 160 / 192 / 288 / 480-channel projects, where
    the pair items measured no faster) keep a pair per item."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 97, 56, 56), np.float32)
    wt = rng.standard_normal((24, 97, 1, 1), np.float32)
    b = rng.standard_normal(24, np.float32)
    _, n = _conv_with(kernels, 4, x, wt, b)
    assert n == 0
