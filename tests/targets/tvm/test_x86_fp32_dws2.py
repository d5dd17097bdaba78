"""Depthwise 3x3 stride 2 on planes wider than 16 (``x86_fp32_dws2``,
``edgecc_x86_fp32_dw_s2_wide`` = rows per block 1 / 2 / 4, 0 the one-row form; AVX-512): the
wide stride-2 planes take it (path 22 counts every call: a silent fallback fails),
bit-identical to the one-row form (knob 0) at every block size and prefetch distance, and
within 1e-5 relative of PyTorch float64: even and odd widths and heights (the last column's
right neighbour outside the plane), partial last 16-output steps, every row tail, batch 2,
ReLU6-style bounds."""

import ctypes

import numpy as np
import pytest

from edgecc.targets.tvm import lowering, x86_fp32
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="the wide stride-2 form runs on AVX-512 only"),
]

WIDE_PATH, ROW_FORM_PATH = 22, 4


def _path(kernels, i: int) -> int:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    return int(kernels[0].get_function(PATH_QUERY)(i))


def _dw_with(kernels, rows: int, prefetch: int, *args, **kwargs) -> tuple[np.ndarray, int, int]:
    """(output, wide-form calls, row-form calls) of one _conv with the knobs at rows / prefetch."""
    knobs = [ctypes.c_int32.in_dll(kernels[1], name)
             for name in ("edgecc_x86_fp32_dw_s2_wide", "edgecc_x86_fp32_dw_s2_prefetch")]
    old = [k.value for k in knobs]
    knobs[0].value, knobs[1].value = rows, prefetch
    try:
        before = (_path(kernels, WIDE_PATH), _path(kernels, ROW_FORM_PATH))
        out = _conv(kernels, *args, **kwargs)
        return (out, _path(kernels, WIDE_PATH) - before[0],
                _path(kernels, ROW_FORM_PATH) - before[1])
    finally:
        for k, v in zip(knobs, old):
            k.value = v


# (h, w): 65..224 wide (1..7 steps of 16 outputs, partial last ones, odd widths), output rows
# 33..112 high (tails of 1..3 rows after blocks of 4 and 2)
PLANES = [(66, 66), (65, 67), (23, 97), (30, 112), (17, 129), (12, 224), (21, 81)]


@pytest.mark.parametrize("h,w", PLANES)
def test_wide_stride2_equals_the_row_form(kernels, h, w):
    rng = np.random.default_rng(h * 1000 + w)
    x = rng.standard_normal((2, 5, h, w), np.float32)
    wt = rng.standard_normal((5, 1, 3, 3), np.float32)
    b = rng.standard_normal(5, np.float32)
    conv = dict(stride=2, pad=1, lo=-1.0, hi=2.0)
    single, n_wide0, n_form0 = _dw_with(kernels, 0, 0, x, wt, b, **conv)
    assert (n_wide0, n_form0) == (0, 1)
    for rows, prefetch in ((1, 0), (2, 0), (4, 0), (2, 4), (4, 8)):
        wide, n_wide, n_form = _dw_with(kernels, rows, prefetch, x, wt, b, **conv)
        assert (n_wide, n_form) == (1, 1), (rows, prefetch)  # the row form's planes, wide
        assert np.array_equal(wide, single), (rows, prefetch)
    ref = _torch_conv(x, wt, b, 2, 1, lo=-1.0, hi=2.0)
    assert np.abs(single - ref).max() <= 1e-5 * np.abs(ref).max()


def test_default_takes_the_wide_form(kernels):
    """The library's defaults run MobileNetV2-224's stride-2 224-wide plane through it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 224, 224), np.float32)
    wt = rng.standard_normal((3, 1, 3, 3), np.float32)
    b = rng.standard_normal(3, np.float32)
    before = _path(kernels, WIDE_PATH)
    out = _conv(kernels, x, wt, b, stride=2, pad=1, lo=0.0, hi=6.0)
    assert _path(kernels, WIDE_PATH) - before == 1
    ref = _torch_conv(x, wt, b, 2, 1, lo=0.0, hi=6.0)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("h,w", [(56, 56), (32, 32), (21, 17), (40, 63)])
def test_narrower_planes_take_it_over_the_row_blocks(kernels, h, w):
    """Planes 17..64 wide (``edgecc_x86_fp32_dw_s2_min_width`` 16) take this form by default,
    not the row blocks (x86_fp32_dwrows, path 18), bit-identical to those (min width raised)."""
    rng = np.random.default_rng(h + w)
    x = rng.standard_normal((2, 4, h, w), np.float32)
    wt = rng.standard_normal((4, 1, 3, 3), np.float32)
    b = rng.standard_normal(4, np.float32)
    before = (_path(kernels, WIDE_PATH), _path(kernels, 18))
    out = _conv(kernels, x, wt, b, stride=2, pad=1, lo=-1.0, hi=1.5)
    assert (_path(kernels, WIDE_PATH) - before[0], _path(kernels, 18) - before[1]) == (1, 0)
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_dw_s2_min_width")
    old, var.value = var.value, 64
    try:
        before = (_path(kernels, WIDE_PATH), _path(kernels, 18))
        blocks = _conv(kernels, x, wt, b, stride=2, pad=1, lo=-1.0, hi=1.5)
        assert (_path(kernels, WIDE_PATH) - before[0], _path(kernels, 18) - before[1]) == (0, 1)
    finally:
        var.value = old
    assert np.array_equal(out, blocks)
