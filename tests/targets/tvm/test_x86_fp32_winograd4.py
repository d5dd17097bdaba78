"""Winograd F(4x4, 3x3) (``x86_fp32_winograd4``): the default for same-size 3x3 convolutions on
maps 16 or 32 wide (``edgecc_x86_fp32_winograd_tile`` 4); every such call counted on path 21
(a silent fallback to F(2x2) or the direct path fails), within 1e-5 relative (max|a - b| /
max|ref|) of the direct path, of F(2x2) and of PyTorch float64, bias, residual and ReLU fused;
other maps stay F(2x2); the library's weights cache keeps F(2x2)'s and F(4x4)'s U apart."""

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecc.targets.tvm import lowering, x86_fp32, x86_fp32_winograd4
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401
from tests.targets.tvm.test_x86_fp32_winograd import _sconv_flagged, builds, _counters, _expected  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="Winograd runs on AVX-512 only"),
]

WINOGRAD_PATH, WINOGRAD4_PATH = 16, 21
# max|a - b| / max|ref|; F(4x4) measured <= 6.1e-6 over 200 random layers of <= 64 input
# channels, <= 3.7e-6 on ResNet-20's (x86_fp32_winograd4's docstring); F(2x2), direct <= 7.3e-7
BOUND = 1e-5


def _rel(a, ref) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def _paths(kernels) -> tuple[int, int]:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    query = kernels[0].get_function(PATH_QUERY)
    return int(query(WINOGRAD_PATH)), int(query(WINOGRAD4_PATH))


def _run(kernels, winograd: int, tile: int, fn):
    """(fn's result, (path 16, path 21) calls it made) with the two knobs set."""
    wg = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_winograd")
    tl = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_winograd_tile")
    old = wg.value, tl.value
    wg.value, tl.value = winograd, tile
    try:
        before = _paths(kernels)
        out = fn()
        after = _paths(kernels)
        return out, (after[0] - before[0], after[1] - before[1])
    finally:
        wg.value, tl.value = old


def _case(c, oc, h, w, batch, residual, relu, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w), np.float32)
    wt = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc, np.float32)
    res = rng.standard_normal((batch, oc, h, w), np.float32) if residual else None
    return x, wt, b, res, 0.0 if relu else -np.inf


def _check(kernels, c, oc, h, w, batch, residual, relu, seed):
    x, wt, b, res, lo = _case(c, oc, h, w, batch, residual, relu, seed)

    def conv():
        return _conv(kernels, x, wt, b, pad=1, res=res, lo=lo)

    f4, n4 = _run(kernels, 1, 4, conv)
    f2, n2 = _run(kernels, 1, 2, conv)
    direct, nd = _run(kernels, 0, 4, conv)
    assert (n4, n2, nd) == ((1, 1), (1, 0), (0, 0))
    ref = _torch_conv(x, wt, b, 1, 1, res, lo=lo)
    assert _rel(f4, ref) <= BOUND and _rel(f4, direct) <= BOUND and _rel(f4, f2) <= BOUND
    return f4, f2


# ResNet-20's 16->16 @32 and 32->32 @16, a batch of 2, odd channel counts, a 16x32 map, wider
SHAPES = [(16, 16, 32, 32, 1), (32, 32, 16, 16, 1), (16, 16, 32, 32, 2), (24, 40, 16, 32, 1),
          (9, 7, 16, 16, 2), (64, 64, 32, 32, 1)]


@pytest.mark.parametrize("c,oc,h,w,batch", SHAPES)
@pytest.mark.parametrize("residual,relu", [(False, False), (True, True), (False, True)])
def test_f4x4_matches_direct_f2x2_and_torch(kernels, c, oc, h, w, batch, residual, relu):
    """Tile 4: every call counted on paths 16 and 21, within BOUND of the direct path, of
    F(2x2) (tile 2: path 16 only) and of PyTorch float64; not F(2x2)'s sums (a real switch)."""
    f4, f2 = _check(kernels, c, oc, h, w, batch, residual, relu, c * oc + h + w)
    assert not np.array_equal(f4, f2)


@settings(max_examples=12, deadline=None)
@given(c=st.integers(8, 64), oc=st.integers(1, 64), wide=st.booleans(),
       panels=st.integers(1, 3), batch=st.integers(1, 2), residual=st.booleans(),
       relu=st.booleans(), seed=st.integers(0, 2**16))
def test_f4x4_numerics_over_shapes(kernels, c, oc, wide, panels, batch, residual, relu, seed):
    """Any eligible shape (16 wide: heights of 16 per panel; 32 wide: 8) within BOUND."""
    w = 32 if wide else 16
    h = panels * (8 if wide else 16)
    assert x86_fp32_winograd4.eligible(c, h, w)
    _check(kernels, c, oc, h, w, batch, residual, relu, seed)


@pytest.mark.parametrize("c,h,w", [(64, 8, 8), (16, 12, 20), (16, 24, 24), (16, 8, 16),
                                   (16, 12, 32), (16, 64, 64), (65, 16, 16), (128, 32, 32)])
def test_other_maps_stay_f2x2(kernels, c, h, w):
    """8-wide maps (2x2 tiles of 4x4 would fill 4 lanes), other widths, heights of part panels
    and more than 64 input channels (F(4x4)'s error grows with them) run F(2x2) (path 16, not
    21) at tile 4, within BOUND of the direct path."""
    assert not x86_fp32_winograd4.eligible(c, h, w)
    x, wt, b, res, lo = _case(c, 16, h, w, 1, True, True, 7)

    def conv():
        return _conv(kernels, x, wt, b, pad=1, res=res, lo=lo)

    out, n = _run(kernels, 1, 4, conv)
    direct, _ = _run(kernels, 0, 4, conv)
    assert n == (1, 0)
    assert _rel(out, direct) <= BOUND


def test_cached_weights_keep_each_tile_size_apart(kernels):
    """One weights tensor (meta[15] = 2: cached per library) called at tile 4, 2, 4: each call
    bit-identical to the same tile's per-call transform (meta[15] 0); the first call at each
    tile packs (an F(4x4) U, 36 positions, then an F(2x2) one, 16), the third reuses the
    first's: the cache never hands one tile size's U to the other."""
    import tvm

    x, wt, b, _, _ = _case(32, 32, 16, 16, 1, False, False, 3)
    weight = tvm.runtime.tensor(wt.reshape(32, -1))  # one FFI object: the cache's key
    got, packs = {}, []
    for tile in (4, 2, 4):
        for flag in (2, 0):
            (out, cached, packed), n = _run(
                kernels, 1, tile, lambda: _sconv_flagged(kernels, x, weight, b, flag))
            assert n == (1, 1 if tile == 4 else 0) and cached == (flag == 2)
            got.setdefault((tile, flag), []).append(out)
            if flag == 2:
                packs.append(packed)
    assert packs == [1, 1, 0]
    for tile in (4, 2):
        for out in got[(tile, 2)]:
            np.testing.assert_array_equal(out, got[(tile, 0)][0])
    assert not np.array_equal(got[(4, 0)][0], got[(2, 0)][0])


def test_the_default_build_runs_f4x4_where_eligible(builds):
    """The ResNet-like default build (tile 4 as linked): its 16->16 @32 and 32->32 @16 convs
    take F(4x4) (path 21: 2 calls a run), 64->64 @8 F(2x2) (path 16: 3 calls a run), the
    output within 1e-5 of PyTorch; moved to tile 2 at run time, no F(4x4) call and the output
    within 1e-5 of tile 4's."""
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    m, x, res = builds[0]
    query = res._runner.module.get_function(PATH_QUERY, query_imports=True)
    tile = ctypes.c_int32.in_dll(ctypes.CDLL(res._runner.library), "edgecc_x86_fp32_winograd_tile")
    assert tile.value == 4
    outs = {}
    for value in (4, 2):
        tile.value = value
        try:
            before = int(query(WINOGRAD_PATH)), int(query(WINOGRAD4_PATH))
            outs[value] = np.asarray(res.run(x))
            after = int(query(WINOGRAD_PATH)), int(query(WINOGRAD4_PATH))
        finally:
            tile.value = 4
        assert (after[0] - before[0], after[1] - before[1]) == ((3, 2) if value == 4 else (3, 0))
    ref = _expected(m, x)
    assert _rel(outs[4], ref) <= BOUND and _rel(outs[4], outs[2]) <= BOUND


PAIRS_PATH = 27


@pytest.mark.parametrize("c,oc,h,w,batch", [(16, 16, 32, 32, 1), (16, 16, 32, 32, 2),
                                            (32, 32, 16, 16, 1), (24, 40, 16, 32, 1),
                                            (9, 7, 48, 16, 2), (16, 16, 24, 32, 1)])
def test_panel_pairs_give_the_same_sums(kernels, c, oc, h, w, batch):
    """Maps of an even number of panels, at least 2 per pool thread (32x32: 4; 48x16: 3 is
    odd, 24x32: 3), run items of 2 panels (path 27: the GEMM's 6 x 2 tiles) at 1 and 2 pool
    threads: bit-identical to items of 1 panel (``edgecc_x86_fp32_wg4_pairs`` 0), within BOUND
    of PyTorch. 32->32 @16 (1 panel) and 16x32 (2 panels at 2 threads) keep 1-panel items."""
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    x, wt, b, res, lo = _case(c, oc, h, w, batch, True, True, c + oc + h)
    query = kernels[0].get_function(PATH_QUERY)
    pairs = ctypes.c_int64.in_dll(kernels[1], "edgecc_x86_fp32_wg4_pairs")
    threads = ctypes.c_int32.in_dll(kernels[1], "edgecc_pool_threads")
    old = pairs.value, threads.value
    outs, taken = [], []
    try:
        for pool in (1, 2):
            for value in (1, 0):
                pairs.value, threads.value = value, pool
                before = int(query(PAIRS_PATH))
                out, n = _run(kernels, 1, 4, lambda: _conv(kernels, x, wt, b, pad=1, res=res,
                                                           lo=lo))
                assert n == (1, 1)
                outs.append(out)
                taken.append(int(query(PAIRS_PATH)) - before)
    finally:
        pairs.value, threads.value = old
    panels = (h // 4) * (w // 4) // 16
    assert taken == [int(panels % 2 == 0 and panels >= 2), 0,
                     int(panels % 2 == 0 and panels >= 4), 0]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    assert _rel(outs[0], _torch_conv(x, wt, b, 1, 1, res, lo=lo)) <= BOUND
