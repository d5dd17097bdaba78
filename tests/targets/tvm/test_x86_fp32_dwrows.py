"""Depthwise 3x3 over blocks of output rows (``x86_fp32_dwrows``, ``edgecc_x86_fp32_dw_rows``
1, the default; stride 1 and 2, planes <= 64 wide; AVX-512): the planes of the row form take it
(path 18 counts every call: a silent fallback fails), bit-identical to the one-row form (knob
0) and within 1e-5 relative of PyTorch float64; full blocks of 8 rows, every tail (1..7 rows),
rows of one and of several 16-output steps, partial last steps, batch 2, ReLU6-style bounds.
Small same-size planes run flat (``edgecc_x86_fp32_dw_flat``, path 19), bit-identical to the
16-channel tile they replace."""

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

ROWS_PATH, ROW_FORM_PATH = 18, 4


def _path(kernels, i: int) -> int:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    return int(kernels[0].get_function(PATH_QUERY)(i))


def _dw_with(kernels, knob: int, *args, **kwargs) -> tuple[np.ndarray, int, int]:
    """(output, row-block calls, row-form calls) of one _conv with edgecc_x86_fp32_dw_rows = knob
    (stride-2 planes kept off x86_fp32_dws2's form: ``edgecc_x86_fp32_dw_s2_min_width`` raised)."""
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_dw_rows")
    s2 = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_dw_s2_min_width")
    old, var.value = var.value, knob
    old_s2, s2.value = s2.value, 1 << 30
    try:
        before = (_path(kernels, ROWS_PATH), _path(kernels, ROW_FORM_PATH))
        out = _conv(kernels, *args, **kwargs)
        return (out, _path(kernels, ROWS_PATH) - before[0],
                _path(kernels, ROW_FORM_PATH) - before[1])
    finally:
        var.value = old
        s2.value = old_s2


# (stride, h, w): output rows 16 (two blocks), 9..23 high (every tail 1..7 with the others),
# rows 17 and 33 wide (2 and 3 steps, partial last), 40 wide stride 2 (20 outputs: 2 steps)
PLANES = [(1, 16, 16), (1, 17, 17), (1, 19, 33), (1, 13, 9 + 16), (1, 10, 20), (1, 12, 18),
          (1, 14, 21), (1, 23, 31), (2, 32, 32), (2, 19, 23), (2, 29, 40), (2, 21, 33),
          (2, 27, 17), (2, 25, 34)]


@pytest.mark.parametrize("stride,h,w", PLANES)
def test_row_blocks_equal_the_row_form(kernels, stride, h, w):
    rng = np.random.default_rng(h * 100 + w + stride)
    x = rng.standard_normal((2, 21, h, w), np.float32)
    wt = rng.standard_normal((21, 1, 3, 3), np.float32)
    b = rng.standard_normal(21, np.float32)
    blocks, n_blocks, n_form = _dw_with(kernels, 1, x, wt, b, stride=stride, pad=1, lo=-1.0,
                                        hi=2.0)
    assert (n_blocks, n_form) == (1, 1)  # the row form's planes, in blocks
    single, n_blocks0, n_form0 = _dw_with(kernels, 0, x, wt, b, stride=stride, pad=1, lo=-1.0,
                                          hi=2.0)
    assert (n_blocks0, n_form0) == (0, 1)
    assert np.array_equal(blocks, single)
    ref = _torch_conv(x, wt, b, stride, 1, lo=-1.0, hi=2.0)
    assert np.abs(blocks - ref).max() <= 1e-5 * np.abs(ref).max()


FLAT_PATH, CHANNELS_PATH = 19, 6


def test_small_stride2_planes_keep_the_channels_tile(kernels):
    """Output rows 8 wide or less, stride 2, stay on the 16-channel tile (path 6): no row
    blocks, no flat form."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 32, 8, 8), np.float32)
    wt = rng.standard_normal((32, 1, 3, 3), np.float32)
    b = rng.standard_normal(32, np.float32)
    before = [_path(kernels, i) for i in (ROWS_PATH, FLAT_PATH, CHANNELS_PATH)]
    _conv(kernels, x, wt, b, stride=2, pad=1)
    after = [_path(kernels, i) for i in (ROWS_PATH, FLAT_PATH, CHANNELS_PATH)]
    assert [a - c for a, c in zip(after, before)] == [0, 0, 1]


def _assert_flat_equals_the_tile(kernels, x, wt, b, stride):
    """The flat form (dw_flat 1, path 19) and the 16-channel tile (dw_flat 0, path 6) each
    take the call once, bit-identical, within 1e-5 of PyTorch (pad 1, clamp [-1, 2])."""
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_dw_flat")
    outs, counts = [], []
    for knob in (1, 0):
        old, var.value = var.value, knob
        try:
            before = [_path(kernels, i) for i in (FLAT_PATH, CHANNELS_PATH)]
            outs.append(_conv(kernels, x, wt, b, stride=stride, pad=1, lo=-1.0, hi=2.0))
            counts.append([_path(kernels, i) - c
                           for i, c in zip((FLAT_PATH, CHANNELS_PATH), before)])
        finally:
            var.value = old
    assert counts == [[1, 0], [0, 1]]
    assert np.array_equal(outs[0], outs[1])
    ref = _torch_conv(x, wt, b, stride, 1, lo=-1.0, hi=2.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()


# (h, w): one block (4x4, 3x3), partial blocks (5x5, 7x7, 6x7), whole blocks (8x8), 8 blocks
@pytest.mark.parametrize("h,w", [(4, 4), (3, 3), (5, 5), (7, 7), (6, 7), (8, 8), (16, 8)])
def test_flat_small_planes_equal_the_channels_tile(kernels, h, w):
    """Small same-size planes (stride 1, pad 1, rows <= 8 wide, <= 128 pixels) run flat
    (``edgecc_x86_fp32_dw_flat``, path 19, not 6), bit-identical to the 16-channel tile (knob
    0, path 6), within 1e-5 of PyTorch: 37 channels (not a multiple of 16), batch 2."""
    rng = np.random.default_rng(h * 10 + w)
    x = rng.standard_normal((2, 37, h, w), np.float32)
    wt = rng.standard_normal((37, 1, 3, 3), np.float32)
    b = rng.standard_normal(37, np.float32)
    _assert_flat_equals_the_tile(kernels, x, wt, b, stride=1)


def test_wide_planes_keep_the_one_row_form(kernels):
    """Planes wider than DW_ROWS_WIDTH (64; slower in blocks with their input from memory)
    stay on the one-row form (path 4, not 18); 64 wide takes the blocks."""
    rng = np.random.default_rng(9)
    for w, blocks in ((65, 0), (64, 1)):
        x = rng.standard_normal((1, 3, 10, w), np.float32)
        wt = rng.standard_normal((3, 1, 3, 3), np.float32)
        b = rng.standard_normal(3, np.float32)
        out, n_blocks, n_form = _dw_with(kernels, 1, x, wt, b, stride=1, pad=1)
        assert (n_blocks, n_form) == (blocks, 1)
        ref = _torch_conv(x, wt, b, 1, 1)
        assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("h", [16, 15, 13, 2, 1])
def test_stride2_16_wide_planes_equal_the_channels_tile(kernels, h):
    """Stride-2 depthwise on 16-wide planes (8-wide output rows, h <= 16) runs 2 output rows
    per vector (``edgecc_x86_fp32_dw_flat``, path 19, not 6): even and odd heights (a last
    half-filled vector), one row; bit-identical to the 16-channel tile (knob 0), within 1e-5
    of PyTorch; 37 channels, batch 2."""
    rng = np.random.default_rng(100 + h)
    x = rng.standard_normal((2, 37, h, 16), np.float32)
    wt = rng.standard_normal((37, 1, 3, 3), np.float32)
    b = rng.standard_normal(37, np.float32)
    _assert_flat_equals_the_tile(kernels, x, wt, b, stride=2)


@pytest.mark.parametrize("c,h", [(192, 8), (480, 4), (37, 7)])
def test_flat_masks_once_per_call_equal_per_chunk(kernels, c, h):
    """The flat form's masks computed once per call (``edgecc_x86_fp32_dw_flat_once`` 1, the
    default: MobileNetV2-32's 192 @8 / 288 @8 / 480 @4 pooled calls 0.68-0.83x) and per pool
    chunk (0, as before): both take the flat path (19) once, bit-identical, within 1e-5 of
    PyTorch; MobileNetV2-32's pooled shapes and a partial-block one."""
    rng = np.random.default_rng(c + h)
    x = rng.standard_normal((1, c, h, h), np.float32)
    wt = rng.standard_normal((c, 1, 3, 3), np.float32)
    b = rng.standard_normal(c, np.float32)
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_dw_flat_once")
    assert var.value == 1
    outs, counts = [], []
    for knob in (1, 0):
        old, var.value = var.value, knob
        try:
            before = _path(kernels, FLAT_PATH)
            outs.append(_conv(kernels, x, wt, b, stride=1, pad=1, lo=0.0, hi=6.0))
            counts.append(_path(kernels, FLAT_PATH) - before)
        finally:
            var.value = old
    assert counts == [1, 1]
    assert np.array_equal(outs[0], outs[1])
    ref = _torch_conv(x, wt, b, 1, 1, lo=0.0, hi=6.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()
