"""The VNNI convolution pooled by bands of output rows (each band pads the input rows it
reads in its own thread's buffer, so the two threads share the padded copy too): equal to
the whole-copy serial path and to the integer arithmetic, bit for bit, and taken (its
counter grows) wherever the panels split into whole bands."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import build_and_load, random_int8, random_requant
from tests.targets.tvm.test_x86_int8 import _conv_ref, _isas, _requant

POOL, SERIAL = -62, 63  # edgecc_x86_serial_work_log2: every job on the pool / every job serial

# (input, weights' shape, zero point, stride, pad, dilation, banded)
CASES = (
    ((1, 16, 32, 32), (16, 16, 3, 3), -7, (1, 1), (1, 1), (1, 1), True),   # 32 rows, 4 bands
    ((1, 16, 16, 16), (24, 16, 3, 3), 5, (2, 2), (1, 1), (1, 1), True),   # 8x8: 2 rows a unit
    ((1, 8, 20, 20), (16, 8, 3, 3), 11, (1, 1), (2, 2), (2, 2), True),    # dilation 2 halo
    ((1, 5, 12, 12), (12, 5, 3, 3), -3, (1, 1), (1, 1), (1, 1), True),    # 3 units: 3 bands
    ((1, 5, 9, 35), (12, 5, 3, 3), 9, (1, 1), (1, 1), (1, 1), False),     # 315 px: whole copy
)


@pytest.mark.skipif(not any(i != "avx2" for i in _isas()), reason="no VNNI on this CPU")
def test_banded_convolution_equals_the_whole_copy(tmp_path):
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(3)
    xs = [random_int8(rng, *c[0]) for c in CASES]
    ws = [random_int8(rng, *c[1]) for c in CASES]
    eps = [random_requant(rng, c[1][0]) for c in CASES]
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(list(x.shape), "int8"))
              for i, x in enumerate(xs)]
    with bb.function("main", params):
        with bb.dataflow():
            outs = [x86_int8.emit_conv(bb, p, w, c[2], list(c[3]), list(c[4]), list(c[5]), e)
                    for p, w, c, e in zip(params, ws, CASES, eps)]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    so = ctypes.CDLL(path)  # the library TVM loaded (same path: same handle)
    so.edgecc_pool_configure.argtypes = [ctypes.c_int32, ctypes.c_int32]
    so.edgecc_pool_configure(-1, 2)  # the kernels' pool: 2 threads (bands need 2)
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    bands = lib.get_function(x86_int8.CONV_BANDS, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    try:
        runs = {}
        for name, value in (("serial", SERIAL), ("pooled", POOL)):
            shift.value = value
            before = bands()
            for _ in range(3):  # the bands land on either thread in turn
                runs.setdefault(name, []).append([o.numpy() for o in vm["main"](*args)])
            grew = bands() - before
            assert grew == (0 if value == SERIAL else 3 * sum(c[6] for c in CASES)), name
    finally:
        shift.value = 0
    for i, (x, w, c, e) in enumerate(zip(xs, ws, CASES, eps)):
        acc = _conv_ref(x, w, c[2], list(c[3]), list(c[4]), list(c[5]), 1)
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        for run in runs["serial"] + runs["pooled"]:
            np.testing.assert_array_equal(run[i], want)
