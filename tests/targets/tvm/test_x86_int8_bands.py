"""The VNNI convolution pooled by bands of output rows (each band pads the input rows it
reads in its own thread's buffer, so the two threads share the padded copy too): equal to
the whole-copy serial path and to the integer arithmetic, bit for bit, and taken (its
counter grows) wherever the panels split into whole bands."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas

POOL, SERIAL = -62, 63  # edgecc_x86_serial_work_log2: every job on the pool / every job serial

# (input, weights' shape, zero point, stride, pad, dilation, banded)
CASES = (
    ((1, 16, 32, 32), (16, 16, 3, 3), -7, (1, 1), (1, 1), (1, 1), True),   # 32 rows, 4 bands
    ((1, 16, 16, 16), (24, 16, 3, 3), 5, (2, 2), (1, 1), (1, 1), True),   # 8x8: 2 rows a unit
    ((1, 8, 20, 20), (16, 8, 3, 3), 11, (1, 1), (2, 2), (2, 2), True),    # dilation 2 halo
    ((1, 5, 12, 12), (12, 5, 3, 3), -3, (1, 1), (1, 1), (1, 1), True),    # 3 units: 3 bands
    ((1, 5, 9, 35), (12, 5, 3, 3), 9, (1, 1), (1, 1), (1, 1), False),     # 315 px: whole copy
)


@pytest.mark.skipif(not any(i != "avx2" for i in _isas()), reason="no VNNI on this CPU")
def test_banded_convolution_equals_the_whole_copy(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    # the widest VNNI kernels by name: on a CPU with AMX-INT8 and the library's
    # edgecc_x86_int8_amx_conv = 1 the tiles run whole convolutions (amx_conv), not bands
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", [i for i in _isas() if i != "avx2"][-1])
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(3), CASES,
                                                  str(tmp_path / "k.so"))
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    # stride-1 maps of 16-column rows take conv_direct4 (test_x86_int8_direct4): off here
    direct4 = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_direct4")
    direct4.value = 0
    bands = lib.get_function(x86_int8.CONV_BANDS, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    try:
        runs = {}
        for name, value in (("serial", SERIAL), ("pooled", POOL)):
            shift.value = value
            before = bands()
            for _ in range(3):  # the bands land on either thread in turn
                runs.setdefault(name, []).append([o.numpy() for o in vm["main"](*args)])
            grew = bands() - before
            assert grew == (0 if value == SERIAL else 3 * sum(c[6] for c in CASES)), name
    finally:
        shift.value, direct4.value = 0, 1
    _assert_runs_equal_reference(runs["serial"] + runs["pooled"], xs, ws, eps, CASES)
