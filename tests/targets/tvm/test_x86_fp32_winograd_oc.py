"""Winograd with output channels in the lanes (``x86_fp32_winograd_oc``): F(2x2, 3x3) on 8x8
maps and F(4x4, 3x3) on 16x16 maps of 16k output channels run it (path 28, besides 16: a
silent fallback fails), bit-identical to the tiles-in-lanes kernels (``edgecc_x86_fp32_wg_oc``
0: ``winograd_conv`` / ``winograd4_conv``) at 1 and 2 pool threads, per-call weights and the
library's cache alike, within 1e-5 of PyTorch (both tile sizes' own tests' bound);
other maps and channel counts keep the tiles-in-lanes kernels."""

import ctypes

import numpy as np
import pytest

from edgecc.targets.tvm import lowering, x86_fp32
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="Winograd runs on AVX-512 only"),
]

WINOGRAD_PATH, OC_PATH = 16, 28
BOUND = 1e-5  # max|a - b| / max|ref|, as F(2x2)'s tests (measured <= 7.2e-7 there)


def _globals(kernels):
    lib = kernels[1]
    return (ctypes.c_int32.in_dll(lib, "edgecc_x86_fp32_winograd"),
            ctypes.c_int64.in_dll(lib, "edgecc_x86_fp32_wg_oc"),
            ctypes.c_int32.in_dll(lib, "edgecc_pool_threads"))


def _paths(kernels) -> tuple[int, int]:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    query = kernels[0].get_function(PATH_QUERY)
    return int(query(WINOGRAD_PATH)), int(query(OC_PATH))


def _runs(kernels, conv):
    """conv() at (pool threads, wg_oc) = (1, 1), (2, 1), (1, 0), (2, 0), Winograd on: the
    outputs and the (path 16, path 28) calls of each."""
    winograd, oc_knob, threads = _globals(kernels)
    old = winograd.value, oc_knob.value, threads.value
    outs, paths = [], []
    try:
        winograd.value = 1
        for value in (1, 0):
            for pool in (1, 2):
                oc_knob.value, threads.value = value, pool
                before = _paths(kernels)
                outs.append(conv())
                after = _paths(kernels)
                paths.append((after[0] - before[0], after[1] - before[1]))
    finally:
        winograd.value, oc_knob.value, threads.value = old
    return outs, paths


@pytest.mark.parametrize("c,oc,side,batch", [(64, 64, 8, 1), (64, 64, 8, 2), (32, 16, 8, 1),
                                             (8, 48, 8, 1), (64, 80, 8, 1), (17, 32, 8, 2),
                                             (128, 128, 8, 1), (32, 32, 16, 1), (32, 32, 16, 2),
                                             (64, 64, 16, 1), (9, 80, 16, 1), (16, 16, 16, 1)])
@pytest.mark.parametrize("residual,relu", [(True, True), (False, False)])
def test_channels_in_lanes_give_the_same_sums(kernels, c, oc, side, batch, residual, relu):
    """ResNet-20's 64->64 @8 and 32->32 @16 (batch 1, 2), 1-5 channel vectors (80: a GEMM of
    4 and one of 1 per chunk), odd input channels, 128 -> 128 @8: path 28 at 1 and 2 pool
    threads, bit-identical to the tiles-in-lanes kernel, within BOUND of PyTorch float64."""
    rng = np.random.default_rng(c * oc + batch + side)
    x = rng.standard_normal((batch, c, side, side), np.float32)
    w = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc, np.float32)
    res = rng.standard_normal((batch, oc, side, side), np.float32) if residual else None
    lo = 0.0 if relu else -np.inf
    outs, paths = _runs(kernels, lambda: _conv(kernels, x, w, b, pad=1, res=res, lo=lo))
    assert paths == [(1, 1), (1, 1), (1, 0), (1, 0)]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    ref = _torch_conv(x, w, b, 1, 1, res, lo=lo)
    assert np.abs(outs[0] - ref).max() <= BOUND * np.abs(ref).max()


@pytest.mark.parametrize("c,oc,h,w", [(64, 24, 8, 8), (64, 24, 16, 16), (64, 64, 8, 16),
                                      (64, 64, 10, 8), (4, 16, 8, 8), (32, 32, 16, 32),
                                      (32, 32, 32, 16), (80, 64, 16, 16)])
def test_other_maps_keep_tiles_in_lanes(kernels, c, oc, h, w):
    """Output channels not a multiple of 16, maps other than 8x8 and 16x16 (16x32, 32x16: F(4x4)
    on 2 panels), fewer than 8 input channels (no Winograd), 80 input channels at 16x16 (past
    F(4x4)'s 64: F(2x2) on 4 panels): never path 28."""
    rng = np.random.default_rng(c + oc + h + w)
    x = rng.standard_normal((1, c, h, w), np.float32)
    wt = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc, np.float32)
    outs, paths = _runs(kernels, lambda: _conv(kernels, x, wt, b, pad=1))
    assert [p[1] for p in paths] == [0, 0, 0, 0]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("side", [8, 16])
def test_cached_weights_equal_the_per_call_transform(kernels, side):
    """meta[15] = 2 (W a constant of the build): Uᵀ packed once into the library's cache (form
    5 / 6, apart from the tiles-in-lanes form 2 / 4 of the same tensor) at the first call,
    reused after (path 17, one packing); bit-identical to the per-call transform."""
    import tvm

    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 64, side, side), np.float32)
    w = rng.standard_normal((64, 64, 3, 3), np.float32) / np.float32(24.0)
    b = rng.standard_normal(64, np.float32)
    fresh, _ = _runs(kernels, lambda: _conv(kernels, x, w, b, pad=1, lo=0.0))
    meta = np.array([1, 64, side, side, 64, 3, 3, 1, 1, 1, 1, 1, 1, side, side, 2], np.int64)
    args = [tvm.runtime.tensor(a) for a in (x, b, meta, np.array([0.0, np.inf], np.float32))]
    weight = tvm.runtime.tensor(np.ascontiguousarray(w.reshape(64, -1)))
    query = kernels[0].get_function(PATH_QUERY)
    packs = ctypes.c_int64.in_dll(kernels[1], "edgecc_x86_fp32_winograd_packs")
    winograd, oc_knob, _ = _globals(kernels)
    old = winograd.value, oc_knob.value
    got = []
    try:
        winograd.value = 1
        for value in (1, 1, 0, 1):
            oc_knob.value = value
            out = tvm.runtime.tensor(np.zeros((1, 64, side, side), np.float32))
            before = int(query(17)), int(query(OC_PATH)), packs.value
            kernels[0].get_function("edgecc_x86_sconv")(args[0], weight, *args[1:], out)
            got.append(((int(query(17)) - before[0], int(query(OC_PATH)) - before[1],
                         packs.value - before[2]), out.numpy()))
    finally:
        winograd.value, oc_knob.value = old
    # packed at the first call with the knob on (form 5), F(2x2)'s form 2 at the knob-0 call
    assert [g[0] for g in got] == [(1, 1, 1), (1, 1, 0), (1, 0, 1), (1, 1, 0)]
    assert all(np.array_equal(g[1], fresh[0]) for g in got)
