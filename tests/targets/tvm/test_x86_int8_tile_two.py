"""Two-panel VNNI tiles (``edgecc_x86_int8_tile_two``, x86_int8_tile_source): conv_direct4
and the GEMM take their panels two at a time (16 sums, each weight broadcast once for both
panels) and write each half back as its one-panel tile would. Equal bit for bit to the
one-panel tiles (the knob 0) and to the integer arithmetic / the Relax ops — requantized
(``tile_write2``), fused float (``tile_post2``) and unfused float (``tile_plain2``)
write-backs; pairs within a row (32 columns), across rows (16 columns), of row pairs (8
columns), stride 2, an odd last panel alone, a partial row tile, and the GEMM's panel pairs
(1x1 and im2col convolutions) — and counted per call only while on (a silent fallback to
one-panel tiles fails)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas
from tests.targets.tvm.test_x86_int8_tile_post import _fused_and_reference

# (input, weights' shape, zero point, stride, pad, dilation): every one conv_direct4's
REQUANT_CASES = (
    ((1, 16, 32, 32), (16, 16, 3, 3), 5, (1, 1), (1, 1), (1, 1)),   # pairs within a row
    ((1, 16, 16, 16), (20, 16, 3, 3), -3, (1, 1), (1, 1), (1, 1)),  # across rows; rows 16-19
    ((1, 32, 8, 8), (16, 32, 3, 3), 0, (1, 1), (1, 1), (1, 1)),     # 8 columns: row pairs
    ((1, 8, 3, 16), (8, 8, 3, 3), 2, (1, 1), (1, 1), (1, 1)),       # 3 panels: the last alone
    ((1, 8, 32, 32), (16, 8, 3, 3), 1, (2, 2), (1, 1), (1, 1)),     # stride 2 (16 columns)
    ((1, 12, 32, 32), (72, 12, 1, 1), -7, (1, 1), (0, 0), (1, 1)),  # 1x1: GEMM panel pairs
    ((1, 6, 16, 20), (20, 6, 3, 3), 3, (1, 1), (1, 1), (1, 1)),     # im2col panels; rows 16-19
)
DIRECT = 5  # the first 5 on conv_direct4's in-place panels, the rest on the GEMM's
# (input, weights' shape, stride, pad) with a fused tail each (act, residual, post_relu,
# float_out, quant): the residual form (ResNet's second convolutions), ReLU6, stride 2
POST_CASES = (((1, 16, 32, 32), (16, 16, 3, 3), 1, 1),
              ((1, 16, 8, 8), (16, 16, 3, 3), 1, 1),
              ((1, 8, 16, 16), (8, 8, 3, 3), 2, 1),
              ((1, 8, 3, 16), (20, 8, 3, 3), 1, 1))
POST_TAILS = ((None, True, True, True, (0.37, -3.0, -128, 127)),
              ("relu6", True, True, True, (0.3, 5.0, -128, 127)),
              ("relu", False, False, True, (0.02, 1.0, -128, 127)),
              (None, True, False, False, (0.5, 0.0, -100, 90)))

needs_vnni = pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")


def _runs(so, lib, vm, args, per_call):
    """The outputs with the knob 1 and 0 and the counter's growth each time; ``per_call``:
    how many calls should count while on."""
    from edgecc.targets.tvm.x86_int8_tile_source import TILE_TWO

    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_two")
    assert knob.value == 1  # on by default
    calls = lib.get_function(TILE_TWO, query_imports=True)
    runs = []
    try:
        for on in (1, 0):
            knob.value = on
            before = calls()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert calls() - before == on * per_call, on
    finally:
        knob.value = 1
    return runs


@needs_vnni
def test_tile_write2_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(21), REQUANT_CASES,
                                                  str(tmp_path / "k.so"))
    direct = lib.get_function(x86_int8.DIRECT4, query_imports=True)
    before = direct()
    runs = _runs(so, lib, vm, [tvm.runtime.tensor(x) for x in xs], len(REQUANT_CASES))
    assert direct() - before == 2 * DIRECT  # the in-place cases on conv_direct4, twice
    _assert_runs_equal_reference(runs, xs, ws, eps, REQUANT_CASES)
    assert all(len(np.unique(runs[0][i])) > 30 for i in range(len(REQUANT_CASES)))


@needs_vnni
def test_tile_post2_and_plain2_equal_the_relax_ops(tmp_path, monkeypatch):
    import tvm

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, n, lib, vm, so = _fused_and_reference(tmp_path, POST_CASES, POST_TAILS, seed=5)
    # each case twice on conv_direct4 with pairs: fused (tile_post2) and its reference's
    # unfused float convolution (tile_plain2)
    runs = _runs(so, lib, vm, [tvm.runtime.tensor(x) for x in xs], 2 * len(POST_CASES))
    for got in runs:
        for i in range(n):  # each fused output equal to the Relax ops'
            np.testing.assert_array_equal(got[i], got[n + i], err_msg=str(i))
    for i in range(len(runs[0])):  # and the two-panel run equal to the one-panel run
        np.testing.assert_array_equal(runs[0][i], runs[1][i], err_msg=str(i))
    assert all(len(np.unique(runs[0][i])) > 30 for i in range(n))  # not saturated
