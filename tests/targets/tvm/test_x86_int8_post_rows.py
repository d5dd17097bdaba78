"""The AVX-512 fused float write-back a tile at a time (post16_rows: a call per tile, not per
16 outputs of a channel): equal to the Relax ops it replaces bit for bit, with the library's
knob on and off, and taken (its counter grows per fused call) only while on."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import build_and_load
from tests.targets.tvm.test_x86_int8 import _isas, _relax_tail

# (act, residual, post_relu, float_out, quant)
TAILS = (("relu6", True, True, True, (0.37, -3.0, -128, 127)),
         ("relu", False, False, False, (0.011, 5.0, -128, 127)),
         (None, True, False, True, (0.05, 0.0, -100, 90)))


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_post_rows_equals_the_relax_ops(tmp_path, monkeypatch):
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (1, 6, 16, 20)).astype(np.int8)  # 320 px: 20 whole panels
    w = rng.integers(-128, 128, (20, 6, 3, 3)).astype(np.int8)  # 20 rows: tiles of 8, 8, 4
    res = (rng.standard_normal((1, 20, 16, 20)) * 40).astype(np.float32)
    ep = x86_int8.Epilogue(off=rng.integers(-3000, 3000, 20).astype(np.int32), requant=False,
                           scale=(rng.random(20) * 1e-3).astype(np.float32),
                           bias=rng.standard_normal(20).astype(np.float32))
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(list(x.shape), "int8"))
    rv = relax.Var("r", relax.TensorType(list(res.shape), "float32"))
    outs, refs = [], []
    with bb.function("main", [xv, rv]):
        with bb.dataflow():
            for act, residual, post_relu, float_out, quant in TAILS:
                got = x86_int8.emit_conv(bb, xv, w, 7, [1, 1], [1, 1], [1, 1], ep, x86_int8.Post(
                    act=act, residual=rv if residual else None, post_relu=post_relu,
                    float_out=float_out, quant=quant))
                ref_f, ref_q = _relax_tail(bb, x86_int8.emit_conv(
                    bb, xv, w, 7, [1, 1], [1, 1], [1, 1], ep), act,
                    rv if residual else None, post_relu, quant)
                outs += list(got)
                refs += [ref_f, ref_q] if float_out else [ref_q]
            out = bb.emit_output(relax.Tuple(outs + refs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    so = ctypes.CDLL(path)
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_post_rows")
    assert knob.value == 1  # on by default
    rows = lib.get_function(x86_int8.POST_ROWS, query_imports=True)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    args = [tvm.runtime.tensor(x), tvm.runtime.tensor(res)]
    try:
        for on in (1, 0):
            knob.value = on
            before = rows()
            got = [o.numpy() for o in vm["main"](*args)]
            assert rows() - before == (len(TAILS) if on else 0), on
            n = len(outs)
            for i in range(n):
                np.testing.assert_array_equal(got[i], got[n + i], err_msg=f"{on} {i}")
            assert len(np.unique(got[1])) > 50  # the int8 output is not saturated
    finally:
        knob.value = 1
