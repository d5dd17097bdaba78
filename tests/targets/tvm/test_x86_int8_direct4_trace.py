"""conv_direct4's band trace (``edgecc_x86_int8_direct4_trace``, x86_int8_direct_source; the
debug view of bench/x86_int8_thread_cost.py): off by default; on, every band of every call is
logged (its counter grows by one a band: one a call when serial, at least one pooled) with
sane rows and TSC stamps, and the outputs stay equal to the integer arithmetic bit for bit."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import POOL, SERIAL, conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas
from tests.targets.tvm.test_x86_int8_direct4 import CASES as DIRECT4_CASES

CASES = tuple(c for c in DIRECT4_CASES if c[6])  # the cases conv_direct4 takes


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_direct4_trace_logs_every_band(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(23), CASES,
                                                  str(tmp_path / "k.so"))
    direct4 = lib.get_function(x86_int8.DIRECT4, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_direct4_trace")
    nxt = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_direct4_trace_next")
    log = (ctypes.c_int64 * (4096 * 8)).in_dll(so, "edgecc_x86_int8_direct4_trace_log")
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    assert knob.value == 0  # off by default: a debug view
    runs = []
    try:
        for value in (0, 1):
            knob.value = value
            for pool in (SERIAL, POOL):
                shift.value = pool
                n0, d4 = nxt.value, direct4()
                for _ in range(3):
                    runs.append([o.numpy() for o in vm["main"](*args)])
                calls, bands = direct4() - d4, nxt.value - n0
                assert calls == 3 * len(CASES), (value, pool)
                if not value:
                    assert bands == 0, pool
                    continue
                if pool == SERIAL:  # one band a call
                    assert bands == calls
                else:
                    assert bands >= calls
                for i in range(n0, nxt.value):
                    r = [log[8 * (i % 4096) + k] for k in range(8)]
                    assert r[0] <= r[1] <= r[2] and 0 <= r[5] <= r[2] - r[1], r
                    assert 0 <= r[3] < r[4] and r[6] in (0, 1), r
                    assert r[7] >> 32 > 0 and r[7] & 0xFFFF > 0, r
                    if pool == SERIAL:
                        assert r[6] == 0, r  # serial: the caller ran it
    finally:
        knob.value, shift.value = 0, 0
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
