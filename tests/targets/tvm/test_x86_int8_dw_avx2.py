"""The int8 depthwise on its AVX2 path (``EDGECC_X86_INT8_ISA=avx2``: the per-channel phases,
``dw_taps``): stride-2 rows split into their column phases by byte shuffles
(``split_columns2``, 16 columns of each phase a step, then 8, the rest by the scalar tail) on
planes wide enough for one or more steps (odd and even padded widths, batch 2, stride (1, 2)), and
written back by ``requant8_hi`` where the epilogue is hi32 — equal to the integer arithmetic
bit for bit, with both counters proving the paths ran (no silent fallback)."""

from __future__ import annotations

import numpy as np

from tests.targets.tvm.int8_cases import calls_library, full_range, random_int8, random_requant
from tests.targets.tvm.test_x86_int8 import _conv_ref, _requant

# (input, stride, pad, zero point): 3x3 depthwise
CASES = (
    ((1, 6, 9, 67), (2, 2), (1, 1), -5),   # padded 69 wide: phases 35 / 34, two steps
    ((2, 5, 8, 64), (2, 2), (1, 1), 3),    # 66 wide, batch 2
    ((1, 4, 7, 40), (1, 2), (0, 0), 9),    # unpadded 40 wide, stride (1, 2): one step
    ((1, 3, 6, 30), (2, 2), (1, 1), -1),   # 32 wide: one step, no tail
    ((1, 3, 6, 20), (2, 2), (1, 1), 2),    # 22 wide: an 8-column step and the tail
    ((1, 7, 16, 16), (2, 2), (1, 1), 4),   # 18 wide (MobileNetV2's 16x16): 8 + the tail
    ((1, 3, 6, 12), (2, 2), (1, 1), -3),   # 14 wide: the scalar tail alone (not counted)
)
SPLIT = 6  # the cases with at least one 16- or 8-column step


def test_avx2_depthwise_equals_the_integer_arithmetic(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx2")
    rng = np.random.default_rng(21)
    xs = [random_int8(rng, *c[0]) for c in CASES]
    ws = [random_int8(rng, c[0][1], 1, 3, 3) for c in CASES]
    # shifts 36-41: hi32 epilogues (kernel_form folds the zero point into the add), clamped
    # and unclamped in turn
    eps = [random_requant(rng, c[0][1]) for c in CASES]
    eps = [full_range(e) if i % 2 else e for i, e in enumerate(eps)]
    lib, vm, _ = calls_library(x86_int8.emit_depthwise, xs, ws, eps,
                               [(c[3], list(c[1]), list(c[2]), [1, 1]) for c in CASES],
                               str(tmp_path / "k.so"))
    split = lib.get_function(x86_int8.DW_SPLIT2, query_imports=True)
    hi32 = lib.get_function(x86_int8.HI32_YMM, query_imports=True)
    before, before_hi = split(), hi32()
    got = [o.numpy() for o in vm["main"](*[tvm.runtime.tensor(x) for x in xs])]
    assert split() - before == SPLIT
    assert hi32() - before_hi == len(CASES)
    for i, (x, w, c, e) in enumerate(zip(xs, ws, CASES, eps)):
        acc = _conv_ref(x, w, c[3], list(c[1]), list(c[2]), [1, 1], x.shape[1])
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        np.testing.assert_array_equal(got[i], want, f"case {i}")
