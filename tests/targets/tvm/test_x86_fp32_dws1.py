"""Depthwise 3x3 stride 1 on planes 65..128 wide in blocks of output rows (``x86_fp32_dws1``,
``edgecc_x86_fp32_dw_s1_wide`` = rows per block 2 / 4, 0 the one-row form; AVX-512): those
planes take it (path 24 counts every call: a silent fallback fails), bit-identical to the
one-row form at both block sizes, within 1e-5 relative of PyTorch float64: every row tail,
partial last 16-output steps, batch 2, ReLU6-style bounds; 224-wide planes of inputs over
6 MiB keep the one-row form."""

import ctypes

import numpy as np
import pytest

from edgecc.targets.tvm import lowering, x86_fp32
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="the row blocks run on AVX-512 only"),
]

S1_PATH, ROW_FORM_PATH = 24, 4


def _path(kernels, i: int) -> int:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    return int(kernels[0].get_function(PATH_QUERY)(i))


def _dw_with(kernels, rows: int, *args, **kwargs) -> tuple[np.ndarray, int, int]:
    """(output, block calls, row-form calls) of one _conv with edgecc_x86_fp32_dw_s1_wide = rows."""
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_dw_s1_wide")
    old, var.value = var.value, rows
    try:
        before = (_path(kernels, S1_PATH), _path(kernels, ROW_FORM_PATH))
        out = _conv(kernels, *args, **kwargs)
        return (out, _path(kernels, S1_PATH) - before[0],
                _path(kernels, ROW_FORM_PATH) - before[1])
    finally:
        var.value = old


# (h, w): 65..256 wide (5..16 steps of 16, partial last ones), 9..23 rows (tails after 4 and 2)
PLANES = [(112, 112), (9, 65), (10, 97), (11, 128), (23, 81), (13, 100), (10, 224), (9, 251)]


@pytest.mark.parametrize("h,w", PLANES)
def test_row_blocks_equal_the_row_form(kernels, h, w):
    rng = np.random.default_rng(h * 1000 + w)
    x = rng.standard_normal((2, 5, h, w), np.float32)
    wt = rng.standard_normal((5, 1, 3, 3), np.float32)
    b = rng.standard_normal(5, np.float32)
    conv = dict(stride=1, pad=1, lo=-1.0, hi=2.0)
    single, n0, f0 = _dw_with(kernels, 0, x, wt, b, **conv)
    assert (n0, f0) == (0, 1)
    for rows in (2, 4):
        blocks, n, f = _dw_with(kernels, rows, x, wt, b, **conv)
        assert (n, f) == (1, 1), rows
        assert np.array_equal(blocks, single), rows
    ref = _torch_conv(x, wt, b, 1, 1, lo=-1.0, hi=2.0)
    assert np.abs(single - ref).max() <= 1e-5 * np.abs(ref).max()


def test_defaults(kernels):
    """By default a 112-wide plane takes the blocks, 224-wide ones too when the input is at most
    ``edgecc_x86_fp32_dw_s1_small_bytes`` (6 MiB: MobileNetV2-224's 16 @224, 3.2 MB), else the
    one-row form (its 48 / 72 @224, 9.6 / 14.4 MB)."""
    rng = np.random.default_rng(9)
    for c, h, w, want in ((2, 12, 112, 1), (2, 12, 224, 1), (32, 224, 224, 0)):
        x = rng.standard_normal((1, c, h, w), np.float32)
        wt = rng.standard_normal((c, 1, 3, 3), np.float32)
        b = rng.standard_normal(c, np.float32)
        before = _path(kernels, S1_PATH)
        out = _conv(kernels, x, wt, b, stride=1, pad=1, lo=0.0, hi=6.0)
        assert _path(kernels, S1_PATH) - before == want, w
        ref = _torch_conv(x, wt, b, 1, 1, lo=0.0, hi=6.0)
        assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
