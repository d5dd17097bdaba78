"""The fused float write-back straight from a VNNI tile's registers (``tile_post``,
x86_int8_tile_source) and the tied vpdpbusd sums (``edgecc_x86_int8_tile_tied``): equal to
the Relax ops they replace bit for bit on conv_direct4's in-place panels (16- and 8-column
maps, stride 2) and im2col panels, with partial row tiles, under every knob setting — and
counted per call only while on (a silent fallback to post16_rows fails)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.int8_cases import build_and_load
from tests.targets.tvm.test_x86_int8 import _isas, _relax_tail

# (input, weights' shape, stride, pad): direct4 16 columns (rows 16-19 a partial tile),
# direct4 8 columns, direct4 stride 2, im2col (6 channels), im2col 1x1 stride 2
CASES = (((1, 8, 16, 16), (20, 8, 3, 3), 1, 1),
         ((1, 16, 8, 8), (16, 16, 3, 3), 1, 1),
         ((1, 8, 16, 16), (8, 8, 3, 3), 2, 1),
         ((1, 6, 16, 20), (16, 6, 3, 3), 1, 1),
         ((1, 16, 16, 16), (32, 16, 1, 1), 2, 0))
# (act, residual, post_relu, float_out, quant) per case
TAILS = (("relu6", True, True, True, (0.37, -3.0, -128, 127)),
         ("relu", True, True, True, (0.3, 5.0, -128, 127)),
         (None, True, False, False, (0.5, 0.0, -100, 90)),
         ("relu", False, False, True, (0.011, 1.0, -128, 127)),
         (None, True, True, True, (0.02, 0.0, -128, 127)))


def _fused_and_reference(tmp_path, cases, tails, seed=11):
    """A library of the fused convolutions (cases / tails as CASES / TAILS) and their Relax
    references: (the inputs, the number of fused outputs, lib, vm, the loaded .so)."""
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    xs, params, outs, refs = [], [], [], []
    for shape, wshape, s, p in cases:
        oh = (shape[2] + 2 * p - wshape[2]) // s + 1
        ow = (shape[3] + 2 * p - wshape[3]) // s + 1
        xs.append(rng.integers(-128, 128, shape).astype(np.int8))
        xs.append((rng.standard_normal((1, wshape[0], oh, ow)) * 30).astype(np.float32))
        params.append(relax.Var(f"x{len(params)}", relax.TensorType(list(shape), "int8")))
        params.append(relax.Var(f"r{len(params)}", relax.TensorType(
            [1, wshape[0], oh, ow], "float32")))
    with bb.function("main", params):
        with bb.dataflow():
            for i, ((shape, wshape, s, p), tail) in enumerate(zip(cases, tails)):
                act, residual, post_relu, float_out, quant = tail
                xv, rv = params[2 * i], params[2 * i + 1]
                w = rng.integers(-128, 128, wshape).astype(np.int8)
                n = wshape[0]
                ep = x86_int8.Epilogue(off=rng.integers(-3000, 3000, n).astype(np.int32),
                                       requant=False,
                                       scale=(rng.random(n) * 1e-3).astype(np.float32),
                                       bias=rng.standard_normal(n).astype(np.float32))
                args = (w, 7, [s, s], [p, p], [1, 1], ep)
                got = x86_int8.emit_conv(bb, xv, *args, x86_int8.Post(
                    act=act, residual=rv if residual else None, post_relu=post_relu,
                    float_out=float_out, quant=quant))
                ref_f, ref_q = _relax_tail(bb, x86_int8.emit_conv(bb, xv, *args), act,
                                           rv if residual else None, post_relu, quant)
                outs += list(got)
                refs += [ref_f, ref_q] if float_out else [ref_q]
            out = bb.emit_output(relax.Tuple(outs + refs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    return xs, len(outs), lib, vm, ctypes.CDLL(path)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_tile_post_equals_the_relax_ops(tmp_path, monkeypatch):
    import tvm

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_int8_tile_source import TILE_PLAIN

    xs, n, lib, vm, so = _fused_and_reference(tmp_path, CASES, TAILS)
    post = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_post")
    tied = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_tied")
    assert post.value == 1 and tied.value == 1  # on by default
    post_calls = lib.get_function(x86_int8.TILE_POST, query_imports=True)
    tied_calls = lib.get_function(x86_int8.TILE_TIED, query_imports=True)
    plain_calls = lib.get_function(TILE_PLAIN, query_imports=True)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for p_on, t_on in ((1, 1), (1, 0), (0, 1), (0, 0)):
            post.value, tied.value = p_on, t_on
            before, before_tied, before_plain = post_calls(), tied_calls(), plain_calls()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert post_calls() - before == p_on * len(CASES), (p_on, t_on)
            # tied: every tile_post call and the references' tile_plain calls (conv_direct4's
            # unfused float outputs), plus int8 tiles (none here)
            plain = plain_calls() - before_plain
            assert tied_calls() - before_tied == t_on * (p_on * len(CASES) + plain), (p_on, t_on)
    finally:
        post.value, tied.value = 1, 1
    for got in runs:
        for i in range(n):  # each fused output equal to the Relax ops'
            np.testing.assert_array_equal(got[i], got[n + i], err_msg=str(i))
        for i in range(n):  # and to the first run's
            np.testing.assert_array_equal(got[i], runs[0][i])
    assert all(len(np.unique(runs[0][i])) > 30 for i in range(n))  # not saturated


# tile_post's residual form (no activation, residual, ReLU, float + int8 outputs: ResNet's
# second convolutions and shortcuts) on conv_direct4: 16 columns (a partial row tile), 8
# columns, 1x1 stride 2; the last case (an activation) keeps the generic form
RESF_CASES = (((1, 16, 16, 16), (20, 16, 3, 3), 1, 1),
              ((1, 32, 8, 8), (16, 32, 3, 3), 1, 1),
              ((1, 16, 32, 32), (32, 16, 1, 1), 2, 0),
              ((1, 8, 16, 16), (16, 8, 3, 3), 1, 1))
RESF_TAILS = ((None, True, True, True, (0.37, -3.0, -128, 127)),
              (None, True, True, True, (0.3, 5.0, -100, 90)),
              (None, True, True, True, (0.02, 0.0, -128, 127)),
              ("relu", True, True, True, (0.3, 1.0, -128, 127)))


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_tile_post_resf_counts_and_equals(tmp_path, monkeypatch):
    """edgecc_x86_int8_tile_post_resf: the residual form's tiles compiled with its flags known
    give the Relax ops' outputs bit for bit, and the generic form's (knob 0); counted per
    conv_direct4 call only while on and only for the residual form (a silent fallback to the
    generic tile_post fails)."""
    import tvm

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_int8_tile_source import TILE_RESF

    xs, n, lib, vm, so = _fused_and_reference(tmp_path, RESF_CASES, RESF_TAILS, seed=5)
    resf = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_post_resf")
    assert resf.value == 1  # on by default
    calls = lib.get_function(TILE_RESF, query_imports=True)
    direct4 = lib.get_function(x86_int8.DIRECT4, query_imports=True)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on in (1, 0):
            resf.value = on
            before, before_d4 = calls(), direct4()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert direct4() - before_d4 >= len(RESF_CASES)  # the fused convs at least
            assert calls() - before == on * (len(RESF_CASES) - 1), on
    finally:
        resf.value = 1
    for got in runs:
        for i in range(n):
            np.testing.assert_array_equal(got[i], got[n + i], err_msg=str(i))
            np.testing.assert_array_equal(got[i], runs[0][i])
    assert all(len(np.unique(runs[0][i])) > 30 for i in range(n))  # not saturated


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_tied_sums_count_on_int8_tiles(tmp_path, monkeypatch):
    """tile_write's named sums take EDGECC_DOT512_TIED while the knob is on (counted), and
    equal the builtin's sums (the same int8 outputs) — a requantized 3x3 on a 16x16 map."""
    import tvm

    from edgecc.targets.tvm import x86_int8
    from tests.targets.tvm.int8_cases import conv_cases_library

    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    cases = (((1, 16, 16, 16), (16, 16, 3, 3), 5, (1, 1), (1, 1), (1, 1)),
             ((1, 32, 8, 8), (16, 32, 3, 3), 0, (1, 1), (1, 1), (1, 1)))
    xs, _, _, lib, vm, so = conv_cases_library(np.random.default_rng(3), cases,
                                               str(tmp_path / "k.so"))
    tied = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_tied")
    calls = lib.get_function(x86_int8.TILE_TIED, query_imports=True)
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on in (1, 0):
            tied.value = on
            before = calls()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert calls() - before == on * len(cases), on
    finally:
        tied.value = 1
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif("avx512vnni" not in _isas(), reason="no AVX-512 VNNI on this CPU")
def test_tile_plain_counts_and_equals(tmp_path, monkeypatch):
    """edgecc_x86_int8_tile_plain: conv_direct4's unfused float outputs (here the references'
    convolutions, emitted without a Post) written from the tile's registers equal the stored
    tile's write_tile (knob 0) bit for bit, and the fused tails equal them; counted per
    conv_direct4 call only while on (a silent fallback to write_tile fails)."""
    import tvm

    from edgecc.targets.tvm.x86_int8_tile_source import TILE_PLAIN

    xs, n, lib, vm, so = _fused_and_reference(tmp_path, RESF_CASES, RESF_TAILS, seed=9)
    plain = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_tile_plain")
    assert plain.value == 1  # on by default
    calls = lib.get_function(TILE_PLAIN, query_imports=True)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx512vnni")
    args = [tvm.runtime.tensor(x) for x in xs]
    runs = []
    try:
        for on in (1, 0):
            plain.value = on
            before = calls()
            runs.append([o.numpy() for o in vm["main"](*args)])
            assert calls() - before == on * len(RESF_CASES), on  # the references' convs
    finally:
        plain.value = 1
    for got in runs:
        for i in range(n):
            np.testing.assert_array_equal(got[i], got[n + i], err_msg=str(i))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert all(len(np.unique(runs[0][i])) > 30 for i in range(n))  # not saturated
