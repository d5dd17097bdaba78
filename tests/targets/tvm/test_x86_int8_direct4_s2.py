"""Stride-2 VNNI convolutions on ``conv_direct4`` (x86_int8_direct_source): the input padded
into a column-phase channel-quad copy (``pad_rows_c4s``), panels read in place. Equal to the
integer arithmetic and to the im2col path (``edgecc_x86_int8_direct4_s2`` 0) bit for bit,
serial and pooled by bands, and taken (``edgecc_x86_int8_direct4_s2_calls`` grows per call)
exactly where it applies."""

from __future__ import annotations

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library, runs_knob_on_and_off
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _has_vbmi, _isas

# (input, weights' shape, zero point, stride, pad, dilation, takes the stride-2 direct4)
CASES = (
    ((1, 16, 32, 32), (32, 16, 3, 3), -7, (2, 2), (1, 1), (1, 1), True),   # ResNet-20 s2
    ((1, 32, 16, 16), (64, 32, 3, 3), 5, (2, 2), (1, 1), (1, 1), True),    # 8 columns
    ((1, 16, 32, 32), (32, 16, 1, 1), 3, (2, 2), (0, 0), (1, 1), True),    # 1x1 shortcut
    ((1, 32, 16, 16), (20, 32, 1, 1), -128, (2, 2), (0, 0), (1, 1), True),  # 20 rows
    ((1, 8, 33, 31), (16, 8, 3, 3), 11, (2, 2), (1, 1), (1, 1), True),     # odd map, wp 33
    ((1, 8, 30, 32), (8, 8, 5, 5), 0, (2, 2), (2, 2), (1, 1), True),       # 5x5
    ((1, 4, 16, 64), (8, 4, 3, 3), 2, (2, 2), (1, 1), (1, 1), False),      # padded rows > 64
    ((1, 12, 16, 16), (16, 12, 3, 3), 9, (2, 1), (1, 1), (1, 1), False),   # stride 2 x 1
    ((1, 6, 16, 16), (16, 6, 3, 3), 3, (2, 2), (1, 1), (1, 1), False),     # 6 channels
    ((1, 16, 14, 16), (8, 16, 3, 3), 1, (2, 2), (1, 1), (1, 1), False),    # 7x8 outputs
)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_direct4_s2_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(7), CASES,
                                                  str(tmp_path / "k.so"))
    calls = lib.get_function(x86_int8.DIRECT4_S2, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    expected = sum(c[6] for c in CASES) if _has_vbmi() else 0  # pad_rows_c4s needs VBMI
    runs = runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_direct4_s2", calls, expected)
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)


@pytest.mark.skipif("avx512vnni" not in _isas() or not _has_vbmi(),
                    reason="no AVX-512 VNNI + VBMI on this CPU")
def test_pad_skip_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    """The stride-2 copy skipping the rows no output row reads (1x1 shortcuts: the odd rows;
    ``edgecc_x86_int8_pad_skip``): the same outputs as the whole copy (knob 0) and the
    integer arithmetic, serial and pooled by bands, every case still on conv_direct4 s2."""
    import ctypes

    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    cases = CASES[:2] + (
        ((1, 16, 32, 32), (32, 16, 1, 1), 3, (2, 2), (0, 0), (1, 1), True),    # 1x1 shortcut
        ((1, 32, 16, 16), (24, 32, 1, 1), -128, (2, 2), (0, 0), (1, 1), True),  # 8 columns
        ((1, 8, 15, 32), (16, 8, 1, 1), 2, (2, 2), (0, 0), (1, 1), True),      # odd rows
    )
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(8), cases,
                                                  str(tmp_path / "k.so"))
    calls = lib.get_function(x86_int8.DIRECT4_S2, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_pad_skip")
    assert knob.value == 1  # on by default
    runs = []
    for skip in (1, 0):  # the s2 path's counter grows either way
        knob.value = skip
        try:
            before = calls()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert calls() - before == len(cases)
        finally:
            knob.value = 1
    runs += runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_direct4_s2", calls, len(cases))
    _assert_runs_equal_reference(runs, xs, ws, eps, cases)
