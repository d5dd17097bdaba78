"""Small conv_direct4 calls kept on the calling thread (x86_int8_stem_source: the 3-channel
stem under ``edgecc_x86_int8_stem_serial``, stride-2 calls under ``edgecc_x86_int8_s2_serial``)
or pooled (1x1 stride-2 shortcuts under ``edgecc_x86_int8_s2_pool``): equal to the integer
arithmetic and to the default scheduling bit for bit, and counted
(``edgecc_x86_int8_d4_serial_calls`` / ``d4_pool_calls``) exactly for the calls each knob keeps
serial while the pool would have taken them, or pools while the threshold kept them serial."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import POOL, SERIAL, conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _has_vbmi, _isas

# (input, weights' shape, zero point, stride, pad, dilation, takes conv_direct4), then
# (a stem, stride 2)
CASES = (
    ((1, 3, 32, 32), (16, 3, 3, 3), 4, (1, 1), (1, 1), (1, 1), True),     # ResNet-20's stem
    ((1, 3, 8, 8), (8, 3, 3, 3), -2, (1, 1), (1, 1), (1, 1), True),       # stem, 8 columns
    ((1, 16, 32, 32), (32, 16, 3, 3), 6, (2, 2), (1, 1), (1, 1), True),   # s2 3x3 (conv1)
    ((1, 16, 32, 32), (32, 16, 1, 1), -5, (2, 2), (0, 0), (1, 1), True),  # s2 1x1 shortcut
    ((1, 16, 32, 32), (16, 16, 3, 3), -7, (1, 1), (1, 1), (1, 1), True),  # neither
    ((1, 3, 64, 64), (32, 3, 3, 3), 1, (1, 1), (1, 1), (1, 1), True),     # a stem over 2^20
)
STEM, S2 = (True, True, False, False, False, False), (False, False, True, True, False, False)
SHORTCUT = (False, False, False, True, False, False)


@pytest.mark.skipif("avx512vnni" not in _isas() or not _has_vbmi(),
                    reason="no AVX-512 VNNI + VBMI on this CPU")
def test_serial_direct4_calls_equal_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8, x86_int8_stem_source

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(23), CASES,
                                                  str(tmp_path / "k.so"))
    kept = lib.get_function(x86_int8_stem_source.D4_SERIAL, query_imports=True)
    pooled = lib.get_function(x86_int8_stem_source.D4_POOL, query_imports=True)
    direct4 = lib.get_function(x86_int8.DIRECT4, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    stem = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_stem_serial")
    s2 = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_s2_serial")
    s2_pool = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_s2_pool")
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    threads = ctypes.c_int32.in_dll(so, "edgecc_pool_threads")
    defaults = stem.value, s2.value, threads.value, s2_pool.value
    assert defaults[:2] == (0, 0) and defaults[3] == 0  # stems pooled by the threshold; s2 as before
    runs = []
    try:
        threads.value = 2
        for st, s, sp in ((0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 1, 1)):
            stem.value, s2.value, s2_pool.value = st * (1 << 20), s, sp
            for pool in (SERIAL, POOL):
                shift.value = pool
                before, d4, before_pool = kept(), direct4(), pooled()
                for _ in range(3):  # pooled: bands land on either thread in turn
                    runs.append([o.numpy() for o in vm["main"](*args)])
                assert direct4() - d4 == 3 * len(CASES)
                expect = (st * sum(STEM) + s * sum(S2)) if pool == POOL else 0
                assert kept() - before == 3 * expect, (st, s, sp, pool)
                # s2_pool (not under s2_serial) pools the shortcut the threshold kept serial
                expect = sum(SHORTCUT) if sp and not s and pool == SERIAL else 0
                assert pooled() - before_pool == 3 * expect, (st, s, sp, pool)
    finally:
        stem.value, s2.value, threads.value, s2_pool.value = defaults
        shift.value = 0
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
