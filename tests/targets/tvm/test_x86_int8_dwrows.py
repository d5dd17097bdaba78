"""dw_rows (``x86_int8_dwrows_source``): int8 depthwise straight from the input rows (no
padded copy, written back from registers) equals the integer arithmetic and the dw_perm path
bit for bit — serial, pooled by bands of output rows, pooled by channels — and is taken (its
counters grow) wherever it applies: no silent fallback."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import calls_library, full_range, random_int8, random_requant
from tests.targets.tvm.test_x86_int8 import _conv_ref, _has_vbmi, _requant

# (input, kernel, zero point, stride, pad, dilation, full-int8 clamp, dw_rows applies,
#  pooled by bands: output rows of 16·k columns)
CASES = (
    ((1, 16, 32, 32), (3, 3), -5, (1, 1), (1, 1), (1, 1), False, True, True),  # MobileNetV2 s1
    ((1, 24, 32, 32), (3, 3), 9, (2, 2), (1, 1), (1, 1), False, True, True),   # s2: 16x16 out
    ((1, 20, 16, 16), (3, 3), 0, (1, 1), (1, 1), (1, 1), True, True, True),    # unclamped
    ((2, 5, 13, 20), (3, 3), 7, (1, 1), (1, 2), (1, 1), False, True, False),   # batch 2, 1x2 pad
    ((2, 5, 13, 16), (3, 3), 7, (1, 1), (1, 1), (1, 1), False, True, True),    # 13 rows, 2 images
    ((1, 6, 20, 20), (3, 3), -2, (1, 1), (2, 2), (2, 2), False, True, False),  # dilation 2
    ((1, 4, 12, 40), (2, 4), 3, (1, 2), (0, 1), (1, 1), False, True, False),   # 2x4, stride (1, 2)
    ((1, 3, 9, 56), (3, 3), -9, (1, 1), (1, 1), (1, 1), False, True, False),   # 4 column blocks
    ((1, 3, 10, 48), (3, 3), 4, (1, 1), (1, 1), (1, 1), False, True, True),    # 3 column blocks
    ((1, 4, 10, 70), (3, 3), 1, (1, 1), (1, 1), (1, 1), False, False, False),  # 70-byte rows: not
)


@pytest.mark.skipif(not _has_vbmi(), reason="dw_rows needs AVX-512 VBMI")
def test_dw_rows_equals_the_reference_and_dw_perm(tmp_path):
    import tvm

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(5)
    xs = [random_int8(rng, *c[0]) for c in CASES]
    ws = [random_int8(rng, c[0][1], 1, *c[1]) for c in CASES]
    eps = [random_requant(rng, c[0][1]) for c in CASES]
    eps = [full_range(e) if c[6] else e for e, c in zip(eps, CASES)]
    lib, vm, so = calls_library(x86_int8.emit_depthwise, xs, ws, eps,
                                [c[2:6] for c in CASES], str(tmp_path / "k.so"))
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    switch = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_rows")
    calls = lib.get_function(x86_int8.DW_ROWS, query_imports=True)
    perm = lib.get_function(x86_int8.DW_PERM, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    bands = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_rows_bands")
    banded = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_rows_banded")
    full = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_full")
    full_calls = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_full_calls")
    assert full.value == 1  # on by default
    rows = sum(c[7] for c in CASES)  # (every dw_rows case has >= 4 output rows: FULL blocks)
    runs = []
    try:
        # serial (whole 4-row blocks in the FULL form, then not); every job on the pool, by
        # bands of output rows; on the pool by channels
        for pool, by_bands, whole in ((63, 1, 1), (63, 1, 0), (-62, 1, 1), (-62, 0, 1)):
            shift.value, bands.value, full.value = pool, by_bands, whole
            before, before_banded, before_full = calls(), banded.value, full_calls.value
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert calls() - before == rows
            assert full_calls.value - before_full == whole * rows, (pool, by_bands, whole)
            banded_cases = sum(c[8] for c in CASES)
            assert banded.value - before_banded == (banded_cases if pool < 0 and by_bands else 0)
        bands.value = 0
        switch.value = 0
        before, perm_before = calls(), perm()
        runs.append([o.numpy() for o in vm["main"](*args)])
        # the dw_perm path instead (its counter counts dw_rows' calls too: the VBMI family)
        assert calls() == before and perm() - perm_before == len(CASES)
    finally:
        shift.value, switch.value, bands.value, full.value = 0, 1, 0, 1
    for i, (x, w, c, e) in enumerate(zip(xs, ws, CASES, eps)):
        acc = _conv_ref(x, w, c[2], list(c[3]), list(c[4]), list(c[5]), c[0][1])
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        for run in runs:
            np.testing.assert_array_equal(run[i], want)
