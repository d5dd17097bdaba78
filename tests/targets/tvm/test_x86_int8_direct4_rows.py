"""conv_direct4 pooled as a job of output-row units (``edgecc_x86_int8_direct4_rows``,
x86_int8_direct_source: each thread pads into its own copy only the input rows its chunks
read that it has not padded yet this call): equal to the integer arithmetic and to the bands
(the knob 0) bit for bit, serial and pooled, at several unit counts a thread, and taken (its
counter grows once per conv_direct4 call) exactly while the knob is on."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import POOL, SERIAL, conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _has_vbmi, _isas
from tests.targets.tvm.test_x86_int8_direct4 import CASES as DIRECT4_CASES

# the cases conv_direct4 takes (stride 1 and 2, 32- / 16- / 8-column maps, 5x5, the stem),
# plus a 1x1 stride-2 shortcut (half its rows never copied) and a map of 13 rows (units
# that do not divide evenly between the items)
CASES = tuple(c for c in DIRECT4_CASES if c[6]) + (
    ((1, 16, 32, 32), (32, 16, 1, 1), 6, (2, 2), (0, 0), (1, 1), _has_vbmi()),  # shortcut
    ((1, 8, 13, 16), (8, 8, 3, 3), -3, (1, 1), (1, 1), (1, 1), True),           # 13 rows
)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_direct4_rows_equal_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8, x86_int8_direct_source

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(17), CASES,
                                                  str(tmp_path / "k.so"))
    calls = lib.get_function(x86_int8_direct_source.DIRECT4_ROWS, query_imports=True)
    direct4 = lib.get_function(x86_int8.DIRECT4, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_direct4_rows")
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    # two pool threads even where the suite runs one a worker (CI): the worker's chunks are
    # the ones that pad backwards into rows its copy already holds
    threads = ctypes.c_int32.in_dll(so, "edgecc_pool_threads")
    default_threads = threads.value
    threads.value = 2
    default = knob.value
    assert default == 0  # off by default: an A/B and --tune knob (see the source)
    taken = sum(c[6] for c in CASES)
    runs = []
    try:
        for value in (0, 1, 2, 4, 16):
            knob.value = value
            for pool in (SERIAL, POOL):
                shift.value = pool
                before, d4 = calls(), direct4()
                for _ in range(3):  # pooled: chunks land on either thread in turn
                    runs.append([o.numpy() for o in vm["main"](*args)])
                assert direct4() - d4 == 3 * taken, (value, pool)
                assert calls() - before == (3 * taken if value else 0), (value, pool)
    finally:
        knob.value, shift.value, threads.value = default, 0, default_threads
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
