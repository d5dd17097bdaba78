"""The oc_split convolution's (panel, 8 channels) items ordered channel-major
(``edgecc_x86_int8_oc_major``: each thread's contiguous run of items is a run of output
channels over every panel, so it reads only its share of the weights): equal to the integer
arithmetic bit for bit, pooled and serial, on and off, and counted (``oc_major``) per call
only while on and pooled by (panel, channels) items."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas

POOL, SERIAL = -62, 63  # edgecc_x86_serial_work_log2: every job on the pool / every job serial

# (input, weights' shape, zero point, stride, pad, dilation): 4, 2 and 1 panels
CASES = (
    ((1, 32, 8, 8), (190, 32, 1, 1), 3, (1, 1), (0, 0), (1, 1)),    # 4 panels, partial tile
    ((1, 48, 8, 8), (288, 48, 1, 1), -5, (1, 1), (0, 0), (1, 1)),   # MobileNetV2's expansion
    ((1, 40, 4, 8), (72, 40, 1, 1), 6, (1, 1), (0, 0), (1, 1)),     # 2 panels
    ((1, 96, 4, 4), (80, 96, 1, 1), -7, (1, 1), (0, 0), (1, 1)),    # one panel
)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_oc_major_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(23), CASES,
                                                  str(tmp_path / "k.so"))
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_oc_major")
    assert knob.value == 1  # on by default
    major = lib.get_function(x86_int8.OC_MAJOR, query_imports=True)
    split = lib.get_function(x86_int8.OC_SPLIT, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on in (1, 0):
            for value in (POOL, SERIAL):
                knob.value, shift.value = on, value
                m0, s0 = major(), split()
                for _ in range(3):  # the items land on either thread in turn
                    runs.append([o.numpy() for o in vm["main"](*args)])
                pooled = 3 * len(CASES) if value == POOL else 0
                assert split() - s0 == pooled, (on, value)  # the oc_split path ran
                assert major() - m0 == (pooled if on else 0), (on, value)
    finally:
        knob.value, shift.value = 1, 0
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
