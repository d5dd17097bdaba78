"""The VNNI convolution's padded copy by vector rows (flip_row: x ^ 0x80 64 / 32 bytes at a
time, masked tail), not the byte loop: equal to the integer arithmetic bit for bit, serial
(the whole copy) and pooled (each band's rows), with the library's knob on and off, and
taken (its counter grows by every padded or strided call) only while the knob is on."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas

POOL, SERIAL = -62, 63  # edgecc_x86_serial_work_log2: every job on the pool / every job serial

# (input, weights' shape, zero point, stride, pad, dilation): every one copies its input
CASES = (
    ((1, 16, 32, 32), (16, 16, 3, 3), -7, (1, 1), (1, 1), (1, 1)),   # bands when pooled
    ((1, 3, 6, 70), (8, 3, 3, 3), 4, (1, 1), (1, 1), (1, 1)),       # rows of 64 + a tail
    ((1, 5, 9, 35), (12, 5, 3, 3), 9, (1, 1), (1, 1), (1, 1)),      # 35-byte rows, whole copy
    ((1, 16, 16, 16), (32, 16, 1, 1), -2, (2, 2), (0, 0), (1, 1)),  # 1x1 stride 2, no pad
)


@pytest.mark.skipif(not any(i != "avx2" for i in _isas()), reason="no VNNI on this CPU")
def test_vector_row_copy_equals_the_byte_loop(tmp_path):
    import tvm

    from edgecc.targets.tvm import x86_int8

    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(5), CASES,
                                                  str(tmp_path / "k.so"))
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_flip_copy")
    assert knob.value == 1  # on by default
    copies = lib.get_function(x86_int8.FLIP_COPIES, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on in (1, 0):
            for value in (SERIAL, POOL):
                knob.value, shift.value = on, value
                before = copies()
                runs.append([o.numpy() for o in vm["main"](*args)])
                assert copies() - before == (len(CASES) if on else 0), (on, value)
    finally:
        knob.value, shift.value = 1, 0
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
