"""``x86_int8_block``'s band form: a block's output rows in bands, each band's expand (its input
rows and the depthwise's halo), depthwise and project on one pool thread. On a 2-thread pool
(forced, as the suite may give a worker one thread) it runs (``BAND_CALLS`` grows by the blocks
that qualify, ``BAND_MISSED`` does not: no entry computed its whole call) and equals the three
calls, the chained form (``BAND_KNOB`` 0) and the integer arithmetic bit for bit; on one
thread it does not run (knob 1) or runs both bands on the caller (knob 2), the same outputs."""

from __future__ import annotations

import ctypes
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.targets.tvm.test_x86_int8 import _avx2, _isas
from tests.targets.tvm.test_x86_int8_block import _build_blocks, _cases, _check, _per_case

_EXAMPLES = itertools.count()
pytestmark = [pytest.mark.skipif(not _avx2(), reason="the x86 int8 kernels need AVX2"),
              pytest.mark.skipif("avx512vnni" not in _isas() and "avxvnni" not in _isas(),
                                 reason="the band form needs the VNNI 1x1 path")]


@pytest.fixture(autouse=True)
def _whole_blocks(monkeypatch):
    """The band form's own tests: the blocks the split form would take (``SPLIT``, maps of
    <= 16x16 pixels) are built whole here, so the band form can take them."""
    from edgecc.targets.tvm import x86_int8_block

    monkeypatch.setattr(x86_int8_block, "SPLIT", False)


def _banded(shapes, least, most):
    """How many of ``shapes`` ((N, C, E, P, H, W, stride, residual)) the band form takes at 2
    threads with ``least`` / ``most`` as band_min / band_max (qblock's test, in Python)."""
    n = 0
    for nb, _, _, _, h, w, s, _ in shapes:
        oh, ow = (h - 1) // s + 1, (w - 1) // s + 1
        units = oh // (16 // math.gcd(ow, 16))
        n += nb == 1 and oh * ow >= least and h * w <= most and units >= 2
    return n


def _run_band(tmp_path, xs, cases, shapes, name, least=1, most=1 << 20):
    """Each case's three calls and fused call at 2 threads with the band form on (band_min
    ``least``, band_max ``most``; twice), then with it off, then at 1 thread (on, and 2: two
    bands on the caller, sharing their expand panels or not): asserts the banded count each time and that all runs agree; -> the
    first run's per-case outputs."""
    from edgecc.targets.tvm import x86_int8_block as b

    lib, vm, args = _build_blocks(tmp_path, xs, cases, name)
    so = ctypes.CDLL(str(tmp_path / name))
    knobs = {k: ctypes.c_int64.in_dll(so, k) for k in b.BAND_KNOBS}
    calls = ctypes.c_int64.in_dll(so, b.BAND_CALLS)
    missed = ctypes.c_int64.in_dll(so, b.BAND_MISSED)
    threads = ctypes.c_int32.in_dll(so, "edgecc_pool_threads")
    saved = {k: v.value for k, v in knobs.items()}, threads.value
    assert saved[0] == {b.BAND_KNOB: int(b.BAND), b.BAND_MIN_KNOB: b.BAND_MIN_PIXELS,
                        b.BAND_MAX_KNOB: b.BAND_MAX_PIXELS, b.BAND_REUSE_KNOB: 1}
    runs = []
    try:
        knobs[b.BAND_MIN_KNOB].value, knobs[b.BAND_MAX_KNOB].value = least, most
        # (2 at 1 thread: both bands on the caller, in turn, the expand panels they share
        # computed once (reuse 1) or by each (reuse 0))
        for band, pool, reuse in ((1, 2, 1), (1, 2, 1), (0, 2, 1), (1, 1, 1), (2, 1, 1),
                                  (2, 1, 0)):
            knobs[b.BAND_KNOB].value, threads.value = band, pool
            knobs[b.BAND_REUSE_KNOB].value = reuse
            before, miss = calls.value, missed.value
            runs.append([o.numpy() for o in vm["main"](*args)])
            want = _banded(shapes, least, most) if band and (pool == 2 or band == 2) else 0
            assert (calls.value - before, missed.value - miss) == (want, 0), (band, pool)
    finally:
        for k, v in saved[0].items():
            knobs[k].value = v
        threads.value = saved[1]
    for again in runs[1:]:
        for x, y in zip(runs[0], again):
            np.testing.assert_array_equal(x, y)
    return _per_case(runs[0], cases)


def test_band_blocks_equal_the_chained_form(tmp_path):
    """MobileNetV2-32's block shapes (32x32, 16x16, 8x8 at stride 1 and 2, residual or not;
    4x4 maps: one panel, never banded) and odd ones (channels not a multiple of 16, 12x8 / 9x16
    maps, batch 2: never banded): the band form runs where it applies and equals the three
    calls, the chained form and the integer arithmetic."""
    rng = np.random.default_rng(11)
    shapes = [(1, 16, 96, 16, 16, 16, 1, True), (1, 16, 96, 32, 16, 16, 2, False),
              (1, 32, 192, 32, 8, 8, 1, True), (1, 32, 192, 48, 8, 8, 1, False),
              (1, 48, 288, 80, 8, 8, 2, False), (1, 80, 480, 80, 4, 4, 1, True),
              (1, 12, 72, 12, 32, 32, 1, True), (1, 12, 72, 16, 32, 32, 2, False),
              (1, 8, 48, 12, 32, 32, 1, False), (1, 6, 20, 9, 12, 8, 1, True),
              (1, 7, 36, 10, 9, 16, 2, False), (2, 16, 40, 16, 16, 16, 1, True)]
    assert _banded(shapes, 1, 1 << 20) == 9
    assert _banded(shapes, 64, 1024) == 8  # the defaults: not the 12x8 (96 pixels... 6x4)
    xs, cases = _cases(rng, shapes)
    _check(xs, cases, _run_band(tmp_path, xs, cases, shapes, "band.so"))


# map sides: mostly ones whose rows make whole 16-pixel panels in a few rows (bandable)
_SIDES = st.one_of(st.sampled_from([4, 6, 8, 10, 12, 16, 20, 24, 32]), st.integers(1, 32))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([1, 1, 1, 2]), st.integers(1, 40),
                          st.integers(1, 200), st.integers(1, 64), _SIDES, _SIDES,
                          st.sampled_from([1, 2]), st.booleans()), min_size=3, max_size=6),
       st.integers(0, 2 ** 32 - 1))
def test_random_band_blocks_equal_the_chained_form(tmp_path, shapes, seed):
    xs, cases = _cases(np.random.default_rng(seed), shapes)
    results = _run_band(tmp_path, xs, cases, shapes, f"rb{next(_EXAMPLES)}.so")
    for three, one in results:
        for a, b in zip(three, one):
            np.testing.assert_array_equal(a, b)


def test_w8a8_model_band_blocks_equal_the_chained_form(tmp_path):
    """A small w8a8 MobileNetV2 (16x16 and 8x8 blocks banded, its 8x8 -> 4x4 one not) on a
    2-thread pool: the band form runs in its 3 blocks and gives the chained form's outputs (and
    the 1-thread run's) bit for bit."""
    import torch

    import edgecc
    from edgecc.targets.tvm import x86_int8_block as b
    from tests.targets.tvm.test_x86_int8_block import _SmallMobileNet

    torch.manual_seed(0)
    model = _SmallMobileNet().eval()
    x = torch.randn(1, 3, 32, 32)
    calib = [(torch.randn(1, 3, 32, 32),) for _ in range(4)]
    with torch.no_grad():
        res = edgecc.compile(model, "host", example_inputs=(x,),
                             pipeline="fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                             calibration=calib, output_dir=str(tmp_path / "m"), progress=False,
                             target_options={"integer_kernels": True})
        res.run(x)  # loads the library
        so = ctypes.CDLL(res._runner.library)
        band = ctypes.c_int64.in_dll(so, b.BAND_KNOB)
        calls = ctypes.c_int64.in_dll(so, b.BAND_CALLS)
        missed = ctypes.c_int64.in_dll(so, b.BAND_MISSED)
        threads = ctypes.c_int32.in_dll(so, "edgecc_pool_threads")
        saved = band.value, threads.value
        outs, ran = [], []
        try:
            for knob, pool in ((1, 2), (0, 2), (1, 2), (1, 1)):
                band.value, threads.value = knob, pool
                before, miss = calls.value, missed.value
                out = res.run(x)
                outs.append(np.asarray(out[0] if isinstance(out, (list, tuple)) else out))
                ran.append((calls.value - before, missed.value - miss))
        finally:
            band.value, threads.value = saved
    assert ran == [(3, 0), (0, 0), (3, 0), (0, 0)]
    for o in outs[1:]:
        np.testing.assert_array_equal(outs[0], o)
