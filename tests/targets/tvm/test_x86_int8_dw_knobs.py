"""The int8 depthwise entry's A/B switches (``x86_int8_dw_entry_source.DW_KNOBS``: library
globals read at each call, no ``getenv``) and dw_direct's packed write-back
(``edgecc_x86_int8_dw_pack``): each one moves the MobileNetV2 depthwise shapes to the path it
names (the path counters say which ran: no silent fallback), and every path's outputs equal
the integer reference bit for bit."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import calls_library, full_range, random_int8, random_requant
from tests.targets.tvm.test_x86_int8 import _conv_ref, _has_vbmi, _requant

# (input, stride, zero point, full int8 range: no clamp): 3x3 pad 1 depthwise as
# MobileNetV2 has them
CASES = (
    ((1, 32, 8, 8), 1, -5, False),    # 64-byte plane: dw_direct, 4 vectors
    ((1, 24, 4, 4), 1, 7, False),     # dw_direct, one vector: 4 channels packed together
    ((1, 16, 16, 16), 2, 3, False),   # 256-byte plane at stride 2: dw_direct "wide"
    ((2, 16, 32, 32), 1, -2, False),  # 32-byte rows: dw_rows
    ((3, 8, 4, 4), 1, 4, True),       # 24 one-vector channels packed, unclamped
    ((2, 11, 4, 4), 1, -1, True),     # 22 one-vector channels: the last batch of 2 unpacked
)
DW_DIRECT, PACKED = 4, 3  # the cases on dw_direct (not wide); packed by default


@pytest.mark.skipif(not _has_vbmi(), reason="the VBMI depthwise paths need AVX-512 VBMI")
def test_dw_switches_pick_the_path_and_keep_the_outputs(tmp_path):
    import tvm

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_int8_dw_entry_source import DW_KNOBS

    rng = np.random.default_rng(11)
    xs = [random_int8(rng, *c[0]) for c in CASES]
    ws = [random_int8(rng, c[0][1], 1, 3, 3) for c in CASES]
    eps = [random_requant(rng, c[0][1]) for c in CASES]
    eps = [full_range(e) if c[3] else e
           for e, c in zip(eps, CASES)]
    lib, vm, so = calls_library(x86_int8.emit_depthwise, xs, ws, eps,
                                [(c[2], [c[1]] * 2, [1, 1], [1, 1]) for c in CASES],
                                str(tmp_path / "k.so"), pool_threads=None)
    knobs = [ctypes.c_int64.in_dll(so, s) for s in (*DW_KNOBS, "edgecc_x86_int8_dw_pack")]
    assert [k.value for k in knobs] == [1, 1, 1, 1]  # the defaults
    counter = {name: lib.get_function(sym, query_imports=True) for name, sym in (
        ("perm", x86_int8.DW_PERM), ("direct", x86_int8.DW_DIRECT),
        ("hi", x86_int8.DW_DIRECT_HI), ("blocked", x86_int8.DW_BLOCKED),
        ("rows", x86_int8.DW_ROWS))}
    libvars = {k: ctypes.c_int64.in_dll(so, f"edgecc_x86_int8_dw_{k}_calls")
               for k in ("direct_wide", "packed")}
    args = [tvm.runtime.tensor(x) for x in xs]
    n = len(CASES)
    # (vbmi, write_hi, block16, pack) -> the counters' growth: dw_direct (4: from registers,
    # or their sums through write_channel), wide 1, dw_rows 1 (all in the VBMI family),
    # packed: the one-vector (4x4) maps; with the family off,
    # the strided and <= 64-output maps channel-blocked, else per channel
    direct = dict(perm=n, direct=DW_DIRECT, blocked=0, rows=1, direct_wide=1)
    settings = {
        (1, 1, 1, 1): dict(direct, hi=DW_DIRECT, packed=PACKED),
        (1, 1, 1, 0): dict(direct, hi=DW_DIRECT, packed=0),
        (1, 0, 1, 1): dict(direct, hi=0, packed=0),
        (0, 1, 1, 1): dict(perm=0, direct=0, hi=0, blocked=n - 1, rows=0, direct_wide=0,
                           packed=0),
        (0, 1, 0, 1): dict(perm=0, direct=0, hi=0, blocked=0, rows=0, direct_wide=0,
                           packed=0),
    }
    runs = {}
    try:
        for setting, want in settings.items():
            for k, v in zip(knobs, setting):
                k.value = v
            before = {k: f() for k, f in counter.items()}
            before.update({k: v.value for k, v in libvars.items()})
            runs[setting] = [o.numpy() for o in vm["main"](*args)]
            grew = {k: f() - before[k] for k, f in counter.items()}
            grew.update({k: v.value - before[k] for k, v in libvars.items()})
            assert grew == want, setting
    finally:
        for k in knobs:
            k.value = 1
    for i, (x, w, c, e) in enumerate(zip(xs, ws, CASES, eps)):
        acc = _conv_ref(x, w, c[2], [c[1], c[1]], [1, 1], [1, 1], c[0][1])
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        for setting, run in runs.items():
            np.testing.assert_array_equal(run[i], want, err_msg=str(setting))


@pytest.mark.skipif(not _has_vbmi(), reason="the VBMI depthwise paths need AVX-512 VBMI")
def test_small_depthwise_calls_stay_serial(tmp_path):
    """``edgecc_x86_int8_dw_serial_outputs``: at 2 threads a depthwise call of fewer outputs
    runs on the calling thread (no pool job; counted), a larger one on the pool, 0 pools both
    as before; the same outputs every way."""
    import tvm

    from edgecc.targets.tvm import x86_int8

    shapes = ((1, 192, 8, 8), (1, 96, 16, 16))  # 12288 outputs (dw_direct), 24576 (dw_rows)
    rng = np.random.default_rng(3)
    xs = [random_int8(rng, *s) for s in shapes]
    ws = [random_int8(rng, s[1], 1, 3, 3) for s in shapes]
    eps = [random_requant(rng, s[1]) for s in shapes]
    _, vm, so = calls_library(x86_int8.emit_depthwise, xs, ws, eps,
                              [(1, [1, 1], [1, 1], [1, 1])] * len(shapes), str(tmp_path / "k.so"))
    limit = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_serial_outputs")
    serial = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_dw_serial_calls")
    timing = ctypes.c_int32.in_dll(so, "edgecc_pool_timing")
    jobs = (ctypes.c_int64 * 16).in_dll(so, "edgecc_pool_stat")  # [0]: pool jobs
    assert limit.value == 20000  # the default
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        timing.value = 1
        for value, want_serial, want_jobs in ((20000, 1, 1), (0, 0, 2)):
            limit.value = value
            before_serial, before_jobs = serial.value, jobs[0]
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert (serial.value - before_serial, jobs[0] - before_jobs) == (want_serial,
                                                                           want_jobs)
    finally:
        timing.value, limit.value = 0, 20000
    for i, (x, w, e) in enumerate(zip(xs, ws, eps)):
        acc = _conv_ref(x, w, 1, [1, 1], [1, 1], [1, 1], shapes[i][1])
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        for run in runs:
            np.testing.assert_array_equal(run[i], want)
