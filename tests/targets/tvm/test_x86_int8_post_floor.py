"""tile_post's int8 rows without the clamp to qmin where a ReLU makes it a no-op
(``edgecc_x86_int8_post_floor``, x86_int8_tile_source): equal to the Relax ops bit for bit
with the knob on and off — including a zero point below qmin (the clamp kept), no ReLU (kept),
relu6, and a residual that drives values far negative before the ReLU — and counted per call
exactly for the calls whose rows skipped it (a silent fallback fails)."""

from __future__ import annotations


import numpy as np
import pytest

from tests.targets.tvm.int8_cases import runs_knob_on_and_off
from tests.targets.tvm.test_x86_int8 import _isas
from tests.targets.tvm.test_x86_int8_tile_post import CASES, _fused_and_reference

# (act, residual, post_relu, float_out, quant) per case of CASES, and whether post_floor applies
TAILS = (("relu6", True, False, True, (0.037, -3.0, -128, 127)),   # act relu6
         (None, True, True, True, (0.3, 5.0, -100, 90)),           # post_relu, narrow range
         ("relu", False, False, True, (0.15, -110.0, -100, 90)),   # qz < qmin: clamp kept
         (None, True, False, True, (0.02, 0.0, -128, 127)),        # no ReLU: clamp kept
         ("relu", True, True, False, (0.0213, 3.0, -128, 127)))    # both, int8 only
TAKEN = (True, True, False, False, True)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
@pytest.mark.parametrize("seed", [4, 31])
def test_post_floor_equals_the_relax_ops(tmp_path, monkeypatch, seed):
    import tvm

    from edgecc.targets.tvm.x86_int8_tile_source import POST_FLOOR

    xs, n, lib, vm, so = _fused_and_reference(tmp_path, CASES, TAILS, seed=seed)
    calls = lib.get_function(POST_FLOOR, query_imports=True)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    args = [tvm.runtime.tensor(x) for x in xs]
    # on then off, serial then pooled, twice each: runs[-1] is the knob off's
    runs = runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_post_floor", calls, sum(TAKEN))
    for got in runs:
        for i in range(n):  # each fused output equal to the Relax ops' and to the knob off's
            np.testing.assert_array_equal(got[i], got[n + i], err_msg=str(i))
            np.testing.assert_array_equal(got[i], runs[-1][i])
    assert all(len(np.unique(runs[0][i])) > 20 for i in range(n))  # not saturated
    assert (runs[0][5] == -100).any()  # the third case's clamp to qmin binds (qz below it)
