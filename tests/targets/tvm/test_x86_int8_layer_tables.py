"""The qconv entry's per-layer tables (``edgecc_x86_int8_layer_tables``,
x86_int8_layer_tables_source): with the knob at 1 (default) every conv_direct4 call, at 2 every VNNI convolution call
takes its off - comp / fold / conv_direct4 offset tables from a slot filled once per layer (the
counter grows by one a call, the fills by one a layer however many runs), and the outputs of fourteen
layers run in turn (conv_direct4 and im2col, stems, stride 2) equal the integer arithmetic bit
for bit, as with the knob off (per-call tables)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library, runs_knob_on_and_off
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas
from tests.targets.tvm.test_x86_int8_direct4 import CASES


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_layer_tables_filled_once_a_layer_and_exact(tmp_path, monkeypatch):
    import tvm

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(31), CASES,
                                                  str(tmp_path / "k.so"))
    args = [tvm.runtime.tensor(x) for x in xs]

    def counter(name: str) -> int:
        return ctypes.c_int64.in_dll(so, "edgecc_x86_int8_layer_tables_" + name).value

    fills0, full0 = counter("fills"), counter("full")
    taken = sum(c[6] for c in CASES)  # default 1: conv_direct4's calls
    runs = runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_layer_tables",
                                lambda: counter("calls"), taken)
    assert counter("fills") - fills0 == taken  # one slot a layer, hit on every later run
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_layer_tables")
    try:
        knob.value = 2  # every call (the im2col's too)
        for _ in range(3):
            before = counter("calls")
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert counter("calls") - before == len(CASES)
    finally:
        knob.value = 1
    assert counter("fills") - fills0 == len(CASES)
    assert counter("full") == full0
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
