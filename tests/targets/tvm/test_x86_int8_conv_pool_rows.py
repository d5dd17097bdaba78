"""``edgecc_x86_int8_conv_pool_rows``: a 1x1 convolution of at least 4 panels a thread
(MobileNetV2-32's 16x16 maps), pooled by panels — rows of the map — is compared with the
pool's threshold unscaled, so the ones the halved job (x86_int8_pool_source) kept serial
pool; counted (``conv_rows``) per call only while on, and never for fewer panels (8x8 maps:
oc_split's channels) or a padded convolution; the outputs equal the integer arithmetic bit
for bit either way."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas

# (input, weights' shape, zero point, stride, pad, dilation)
ROWS = (
    ((1, 16, 16, 16), (96, 16, 1, 1), 4, (1, 1), (0, 0), (1, 1)),   # expansion at 16x16
    ((1, 96, 16, 16), (16, 96, 1, 1), -3, (1, 1), (0, 0), (1, 1)),  # projection at 16x16
)
OTHERS = (
    ((1, 32, 8, 8), (192, 32, 1, 1), 2, (1, 1), (0, 0), (1, 1)),    # 4 panels: not by rows
    ((1, 16, 16, 16), (16, 16, 3, 3), 5, (1, 1), (1, 1), (1, 1)),   # padded: not 1x1
)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_conv_pool_rows_pools_the_16x16_1x1_convolutions(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    cases = ROWS + OTHERS
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(29), cases,
                                                  str(tmp_path / "k.so"))
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    assert ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2").value == 0
    assert ctypes.c_int64.in_dll(so, "edgecc_x86_int8_conv_pool_log2").value == 1
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_conv_pool_rows")
    assert knob.value == 0  # off by default (a --tune candidate)
    rows = lib.get_function(x86_int8.CONV_ROWS, query_imports=True)
    serial = lib.get_function(x86_int8.CONV_SERIAL, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs, kept = [], {}
    try:
        for on in (0, 1):
            knob.value = on
            r0, q0 = rows(), serial()
            for _ in range(3):  # pooled: the panels land on either thread in turn
                runs.append([o.numpy() for o in vm["main"](*args)])
            assert rows() - r0 == (3 * len(ROWS) if on else 0), on
            kept[on] = serial() - q0  # calls kept serial by the scale alone
    finally:
        knob.value = 0
    # on: the 16x16 ones pool by rows instead of being kept serial; the 8x8 one still is
    assert kept[0] - kept[1] == 3 * len(ROWS) and kept[1] == 3, kept
    _assert_runs_equal_reference(runs, xs, ws, eps, cases)
