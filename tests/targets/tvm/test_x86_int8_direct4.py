"""Stride-1 VNNI convolutions reading their panels in place from a channel-quad copy
(``conv_direct4``, x86_int8_direct_source; weights packed tap-major): equal to the integer
arithmetic and to the im2col path (the library's knob 0) bit for bit, serial and pooled by
bands, and taken (its counter grows per call) exactly where it applies."""

from __future__ import annotations

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library, runs_knob_on_and_off
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _has_vbmi, _isas

# (input, weights' shape, zero point, stride, pad, dilation, takes conv_direct4)
CASES = (
    ((1, 16, 32, 32), (16, 16, 3, 3), -7, (1, 1), (1, 1), (1, 1), True),   # ResNet-20 stage 1
    ((1, 32, 16, 16), (20, 32, 3, 3), 5, (1, 1), (1, 1), (1, 1), True),   # 20 rows: tile of 4
    ((1, 8, 16, 20), (16, 8, 5, 3), 11, (1, 1), (2, 1), (1, 1), False),   # 20 columns
    ((1, 8, 13, 32), (8, 8, 5, 5), -128, (1, 1), (3, 2), (1, 1), True),   # 5x5, pad 3 x 2
    ((1, 12, 16, 16), (16, 12, 3, 3), 9, (2, 2), (1, 1), (1, 1), _has_vbmi()),  # s2: phases
    ((1, 6, 16, 16), (16, 6, 3, 3), 3, (1, 1), (1, 1), (1, 1), False),    # 6 channels
    ((1, 64, 8, 8), (64, 64, 3, 3), 0, (1, 1), (1, 1), (1, 1), True),     # 8 columns: 2 rows
    ((1, 16, 6, 8), (8, 16, 3, 3), 2, (1, 1), (1, 1), (1, 1), True),      # 3 panels of 2 rows
    ((1, 16, 7, 8), (8, 16, 3, 3), 2, (1, 1), (1, 1), (1, 1), False),     # 8 columns, odd rows
    ((1, 16, 4, 4), (8, 16, 3, 3), 1, (1, 1), (1, 1), (1, 1), False),     # 4 columns
    # 3 channels (stems): the rows padded to 4 channels (emit_conv's tap_major 2)
    ((1, 3, 32, 32), (16, 3, 3, 3), 4, (1, 1), (1, 1), (1, 1), True),     # ResNet-20's stem
    ((1, 3, 8, 8), (8, 3, 3, 3), -2, (1, 1), (1, 1), (1, 1), True),       # 8 columns
    ((1, 3, 16, 16), (16, 3, 1, 1), 3, (2, 2), (0, 0), (1, 1), False),    # s2: the im2col
    ((1, 3, 16, 18), (8, 3, 3, 3), 1, (1, 1), (0, 0), (1, 1), False),     # unpadded: im2col
)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_direct4_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(5), CASES,
                                                  str(tmp_path / "k.so"))
    calls = lib.get_function(x86_int8.DIRECT4, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_direct4", calls, sum(c[6] for c in CASES))
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)


@pytest.mark.skipif("avx512vnni" not in _isas() or not _has_vbmi(),
                    reason="no AVX-512 VNNI + VBMI on this CPU")
def test_pad_vbmi_copy_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    """conv_direct4's stride-1 channel-quad copy by pad_rows_c4v (masked loads, one vpermb
    per 16 columns: 32-, 16-, 8-column maps, a 5x5 kernel's 3 x 2 padding): the same
    outputs as pad_rows_c4 (the knob 0) and the integer arithmetic, serial and pooled, and
    counted per stride-1 conv_direct4 call only while on; pad_inline (pad_rows_c4's padding
    columns by plain stores) and pad_wide32 (32 columns by two vpermt2b: the 32-column maps,
    a 3-channel stem's padded quad) likewise."""
    import ctypes

    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(6), CASES,
                                                  str(tmp_path / "k.so"))
    calls = lib.get_function(x86_int8.PAD_VBMI, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    stride1 = sum(c[6] and c[3] == (1, 1) for c in CASES)
    runs = runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_pad_vbmi", calls, stride1)
    inline = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_pad_inline")
    vbmi = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_pad_vbmi")
    wide = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_pad_wide32")
    assert wide.value == 1
    try:
        vbmi.value, inline.value = 0, 0  # pad_rows_c4 with its memset padding
        runs.append([o.numpy() for o in vm["main"](*args)])
        vbmi.value, inline.value, wide.value = 1, 1, 0  # pad_rows_c4v 16 columns at a time
        before = calls()
        runs.append([o.numpy() for o in vm["main"](*args)])
        assert calls() - before == stride1
    finally:
        vbmi.value, inline.value, wide.value = 1, 1, 1
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)


@pytest.mark.skipif("avx512vnni" not in _isas() or not _has_vbmi(),
                    reason="no AVX-512 VNNI + VBMI on this CPU")
def test_pad_fast_copy_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    """pad_rows_c4v's common rows by pad_rows_c4f (one padding column each side, 4 real
    channels a quad, 8 / 16 / 32 columns: ResNet-20's stride-1 layers, the 6-row 8-column
    case): the same outputs as the general loop (the knob 0) and the integer arithmetic,
    serial and pooled, counted per call only where it applies — not the 5x5 layer's two
    padding columns, not the 3-channel stems' padded quad."""
    import ctypes

    import tvm

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(8), CASES,
                                                  str(tmp_path / "k.so"))
    counter = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_pad_fast_calls")
    fast = [c for c in CASES if c[6] and c[3] == (1, 1) and c[4] == (1, 1)
            and c[0][1] % 4 == 0 and c[0][3] in (8, 16, 32)]
    assert len(fast) == 4
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_pad_fast", lambda: counter.value,
                                len(fast))
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)
