"""The VNNI (and AVX2) convolution of few panels (1x1 on 8x8 / 4x4 maps) pooled by (panel, 8
output channels) items: equal to the integer arithmetic bit for bit, pooled and serial, with the
library's knob on and off, and taken (its counter grows per call) only while on and pooled."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import conv_cases_library
from tests.targets.tvm.test_x86_int8 import _assert_runs_equal_reference, _isas

POOL, SERIAL = -62, 63  # edgecc_x86_serial_work_log2: every job on the pool / every job serial

# (input, weights' shape, zero point, stride, pad, dilation)
CASES = (
    ((1, 96, 4, 4), (80, 96, 1, 1), -7, (1, 1), (0, 0), (1, 1)),    # one panel, 10 row tiles
    ((1, 32, 8, 8), (190, 32, 1, 1), 3, (1, 1), (0, 0), (1, 1)),    # 4 panels, a partial tile
    ((1, 24, 4, 4), (20, 24, 3, 3), 9, (1, 1), (1, 1), (1, 1)),     # 3x3 padded, one panel
)


@pytest.mark.parametrize("isa", ["avx512vnni", "avx2"])
def test_oc_split_equals_the_integer_arithmetic(tmp_path, monkeypatch, isa):
    """Both kernel families: the VNNI tiles and the AVX2 int16 ones (gemm_panels' rows)."""
    import tvm

    from edgecc.targets.tvm import x86_int8

    if isa not in _isas():
        pytest.skip(f"no {isa} on this CPU")
    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(11), CASES,
                                                  str(tmp_path / "k.so"))
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", isa)
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_oc_split")
    assert knob.value == 1  # on by default
    split = lib.get_function(x86_int8.OC_SPLIT, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on in (1, 0):
            for value in (POOL, SERIAL):
                knob.value, shift.value = on, value
                before = split()
                for _ in range(3):  # the items land on either thread in turn
                    runs.append([o.numpy() for o in vm["main"](*args)])
                want = 3 * len(CASES) if on and value == POOL else 0
                assert split() - before == want, (on, value)
    finally:
        knob.value, shift.value = 1, 0
    _assert_runs_equal_reference(runs, xs, ws, eps, CASES)


# small convolutions the default threshold pools only when the job size counts the write-back,
# the panels and the copy (edgecc_x86_int8_full_work): ResNet-20's 1x1 stride-2 shortcuts
# (banded) and MobileNetV2's 1x1 expansions on 8x8 maps (panel x channels items)
SMALL = (
    ((1, 16, 32, 32), (32, 16, 1, 1), 5, (2, 2), (0, 0), (1, 1)),
    ((1, 24, 32, 32), (24, 24, 1, 1), -4, (2, 2), (0, 0), (1, 1)),
    ((1, 32, 8, 8), (192, 32, 1, 1), 2, (1, 1), (0, 0), (1, 1)),
)


def _im2col_shortcuts(so) -> None:
    """The shortcuts on the im2col path these tests count (by default they take conv_direct4
    on its column-phase copy: tests/targets/tvm/test_x86_int8_direct4_s2.py)."""
    ctypes.c_int64.in_dll(so, "edgecc_x86_int8_direct4_s2").value = 0


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_small_convolutions_pool_at_the_default_threshold(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(13), SMALL,
                                                  str(tmp_path / "k.so"))
    _im2col_shortcuts(so)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    assert ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2").value == 0
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_full_work")
    assert knob.value == 1  # on by default
    # the pool's threshold as written (x86_int8_pool_source's scale, tested below, off)
    scale = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_conv_pool_log2")
    scale.value = 0
    bands = lib.get_function(x86_int8.CONV_BANDS, query_imports=True)
    split = lib.get_function(x86_int8.OC_SPLIT, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on in (1, 0):
            knob.value = on
            b0, s0 = bands(), split()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert (bands() - b0, split() - s0) == ((2, 1) if on else (0, 0)), on
    finally:
        knob.value, scale.value = 1, 1
    _assert_runs_equal_reference(runs, xs, ws, eps, SMALL)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_small_convolutions_run_serially_by_default(tmp_path, monkeypatch):
    """x86_int8_pool_source: the same small convolutions (under twice the threshold with the
    full work) run on the calling thread by default — counted, neither banded nor split — and
    pool again with edgecc_x86_int8_conv_pool_log2 0; the outputs equal the arithmetic."""
    import tvm

    from edgecc.targets.tvm import x86_int8

    xs, ws, eps, lib, vm, so = conv_cases_library(np.random.default_rng(17), SMALL,
                                                  str(tmp_path / "k.so"))
    _im2col_shortcuts(so)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    scale = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_conv_pool_log2")
    assert scale.value == 1  # on by default
    bands = lib.get_function(x86_int8.CONV_BANDS, query_imports=True)
    split = lib.get_function(x86_int8.OC_SPLIT, query_imports=True)
    serial = lib.get_function(x86_int8.CONV_SERIAL, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for value in (1, 0):
            scale.value = value
            b0, s0, q0 = bands(), split(), serial()
            runs.append([o.numpy() for o in vm["main"](*args)])
            got = (bands() - b0, split() - s0, serial() - q0)
            assert got == ((0, 0, len(SMALL)) if value else (2, 1, 0)), value
    finally:
        scale.value = 1
    _assert_runs_equal_reference(runs, xs, ws, eps, SMALL)
