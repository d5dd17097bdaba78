"""VNNI tiles written back from their registers (``tile_write``, x86_int8_tile_source): equal
to the integer arithmetic and to the stored-tile write-back (the library's knob 0) bit for
bit — im2col panels, conv_direct4's in-place panels (16- and 8-column maps), partial row
tiles, folded offsets, a full-range clamp — and counted per call only while on."""

from __future__ import annotations

import ctypes
from dataclasses import replace

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas

# (input, weights' shape, zero point, stride, pad, dilation)
CASES = (
    ((1, 12, 32, 32), (72, 12, 1, 1), -7, (1, 1), (0, 0), (1, 1)),   # 1x1 expansion, folded off
    ((1, 16, 16, 16), (20, 16, 3, 3), 5, (1, 1), (1, 1), (1, 1)),   # direct4; rows 16-19 stored
    ((1, 32, 8, 8), (16, 32, 3, 3), 0, (1, 1), (1, 1), (1, 1)),     # direct4, 8 columns
    ((1, 6, 16, 16), (8, 6, 3, 3), 3, (2, 2), (1, 1), (1, 1)),      # strided im2col
)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_tile_write_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8
    from tests.targets.tvm import int8_cases

    draw = int8_cases.random_requant

    def requant(rng, n):  # every other epilogue with the full int8 clamp (no byte min / max)
        e = draw(rng, n)
        return replace(e, lo=-128, hi=127, zy=0) if n % 16 == 8 else e

    monkeypatch.setattr(int8_cases, "random_requant", requant)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(9), CASES,
                                                  str(tmp_path / "k.so"))
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_write")
    named = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_named")
    assert knob.value == 1 and named.value == 1  # on by default
    calls = lib.get_function(x86_int8.TILE_WRITE, query_imports=True)
    named_calls = lib.get_function(x86_int8.TILE_NAMED, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on, sums in ((1, 1), (1, 0), (0, 1)):  # named sums / the array form / stored tile
            knob.value, named.value = on, sums
            before, before_named = calls(), named_calls()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert calls() - before == on * len(CASES), on
            assert named_calls() - before_named == on * sums * len(CASES), (on, sums)
    finally:
        knob.value, named.value = 1, 1
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
