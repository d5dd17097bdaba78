"""dw_band (``x86_int8_band_dw_source``): int8 depthwise on planes of rows wider than 64 bytes
run by dw_rows' row kernel on column strips equals the integer arithmetic and the former path
(``edgecc_x86_int8_dw_band`` 0) bit for bit — serial and pooled — and is taken (its counter
grows) wherever it applies: no silent fallback; pooled by bands of output rows
(``edgecc_x86_int8_dw_band_rows``) too, where output rows are whole 64-byte lines."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import (POOL, calls_library, full_range, random_int8,
                                          random_requant, runs_knob_on_and_off)
from tests.targets.tvm.test_x86_int8 import _conv_ref, _has_vbmi, _requant

# (input, kernel, zero point, stride, pad, dilation, full-int8 clamp, dw_band applies)
CASES = (
    ((1, 6, 20, 224), (3, 3), -5, (1, 1), (1, 1), (1, 1), False, True),   # MobileNetV2-224 s1
    ((1, 5, 18, 112), (3, 3), 9, (2, 2), (1, 1), (1, 1), False, True),    # s2: 56 wide out
    ((1, 4, 16, 113), (3, 3), 0, (2, 2), (1, 1), (1, 1), True, True),     # odd width, unclamped
    ((2, 3, 11, 100), (3, 3), 7, (1, 1), (1, 2), (1, 1), False, True),    # batch 2, 1x2 pad
    ((1, 3, 13, 90), (3, 3), -2, (1, 1), (2, 2), (2, 2), False, True),    # dilation 2
    ((1, 4, 12, 130), (2, 4), 3, (1, 2), (0, 1), (1, 1), False, True),    # 2x4, stride (1, 2)
    ((1, 2, 9, 65), (3, 3), 1, (1, 1), (1, 1), (1, 1), False, True),      # 65-byte rows
    ((1, 2, 6, 1000), (3, 3), 4, (1, 1), (1, 1), (1, 1), False, True),    # 21 strips
    ((1, 3, 12, 128), (3, 3), 6, (2, 2), (1, 1), (1, 1), False, True),    # s2, 64 wide out
    ((1, 2, 5, 1600), (3, 3), 4, (1, 1), (1, 1), (1, 1), False, False),   # 34 strips: not
    ((1, 4, 10, 48), (3, 3), 2, (1, 1), (1, 1), (1, 1), False, False),    # 48 bytes: dw_rows
)


@pytest.mark.skipif(not _has_vbmi(), reason="dw_band needs AVX-512 VBMI")
def test_dw_band_equals_the_reference_and_the_former_path(tmp_path):
    import tvm

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_int8_band_dw_source import DW_BAND, DW_BAND_KNOB

    rng = np.random.default_rng(16)
    xs = [random_int8(rng, *c[0]) for c in CASES]
    ws = [random_int8(rng, c[0][1], 1, *c[1]) for c in CASES]
    eps = [random_requant(rng, c[0][1]) for c in CASES]
    eps = [full_range(e) if c[6] else e for e, c in zip(eps, CASES)]
    lib, vm, so = calls_library(x86_int8.emit_depthwise, xs, ws, eps,
                                [c[2:6] for c in CASES], str(tmp_path / "k.so"))
    counter = ctypes.c_int64.in_dll(so, DW_BAND)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = runs_knob_on_and_off(so, vm, args, DW_BAND_KNOB, lambda: counter.value,
                                sum(c[7] for c in CASES))
    rows = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_band_rows")
    banded = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_band_banded")
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    assert rows.value == 0  # by channels by default
    try:
        rows.value, shift.value = 1, POOL
        before = banded.value
        runs.append([o.numpy() for o in vm["main"](*args)])
        # by bands: the applying cases whose output rows are 16·k wide (224 s1, 128 s2)
        assert banded.value - before == 2
    finally:
        rows.value, shift.value = 0, 0
    for i, (x, w, c, e) in enumerate(zip(xs, ws, CASES, eps)):
        acc = _conv_ref(x, w, c[2], list(c[3]), list(c[4]), list(c[5]), c[0][1])
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        for run in runs:
            np.testing.assert_array_equal(run[i], want)
