"""The x86 int8 kernels (``x86_int8``): exact against a numpy reference of the integer
lowering's arithmetic on awkward shapes, and the host lowering really calls them (a layer
that silently fell back to the generic int8 GEMM would fail here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgecc
from tests.targets.tvm.int8_cases import build_and_load, random_int8, random_requant


def _avx2() -> bool:
    from edgecc.targets.tvm import lowering, x86_int8

    return x86_int8.supported(lowering.llvm_target(None, None))


pytestmark = pytest.mark.skipif(not _avx2(), reason="needs an x86 CPU with AVX2")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(l for l in f if l.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return set()


def _isas() -> list[str]:
    """The kernel paths this CPU runs: avx2 always, then the VNNI ones it has (the
    kernels' default is the widest)."""
    flags = _cpu_flags()
    return (["avx2"] + (["avxvnni"] if "avx_vnni" in flags else [])
            + (["avx512vnni"] if {"avx512_vnni", "avx512bw"} <= flags else []))


def _has_vbmi() -> bool:
    return "avx512vbmi" in _cpu_flags()


def test_the_library_has_the_vnni_kernels():
    """The compiled kernels contain u8s8 ``vpdpbusd`` in both encodings (AVX-512 zmm and
    256-bit AVX-VNNI), whatever this CPU has: the artifact picks one at run time."""
    import shutil
    import subprocess

    from edgecc.targets.tvm import x86_int8

    if shutil.which("objdump") is None:
        pytest.skip("needs objdump")
    text = subprocess.run(["objdump", "-d", x86_int8.compiled_object()], check=True,
                          capture_output=True, text=True).stdout
    dots = [line for line in text.splitlines() if "vpdpbusd" in line]
    assert any("zmm" in line for line in dots), "no AVX-512 VNNI vpdpbusd"
    assert any("{vex}" in line and "ymm" in line for line in dots), "no AVX-VNNI vpdpbusd"
    assert any("vpmaddwd" in line for line in text.splitlines())  # the AVX2 floor
    # the AVX-512 requantized write-back (64-bit arithmetic shift, narrowing store)
    assert any("vpsraq" in line for line in text.splitlines())
    assert any("vpmovdb" in line for line in text.splitlines())
    # requant16_sat (per-lane shift, saturating narrowing) and dw_perm (byte shuffles)
    for op in ("vpsravq", "vpmovsqb", "vpermb", "vpermt2b"):
        assert any(op in line for line in text.splitlines()), op


def _requant(acc, off, mult, add, shift, lo, hi, zy, axis):
    view = [1] * acc.ndim
    view[axis] = -1
    v = (acc + off.reshape(view)).astype(np.int32).astype(np.int64)
    y = (v * mult.reshape(view) + add.reshape(view)) >> shift.reshape(view)
    return (np.clip(y, lo, hi) + zy).astype(np.int8)


def _conv_ref(x, w, zx, stride, pad, dil, groups):
    xt = torch.from_numpy(x.astype(np.float64))
    xt = torch.nn.functional.pad(xt, (pad[1], pad[1], pad[0], pad[0]), value=float(zx))
    out = torch.nn.functional.conv2d(xt, torch.from_numpy(w.astype(np.float64)),
                                     stride=stride, dilation=dil, groups=groups)
    return out.numpy().astype(np.int64)  # exact: |sums| < 2^53


def _assert_runs_equal_reference(runs, xs, ws, eps, cases):
    """Every run's output ``i`` (a list per run, one per case) equals the integer arithmetic
    of case ``i`` (``int8_cases.conv_cases_library``'s cases, operands and epilogues)."""
    for i, (x, w, c, e) in enumerate(zip(xs, ws, cases, eps)):
        acc = _conv_ref(x, w, c[2], list(c[3]), list(c[4]), list(c[5]), 1)
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        for run in runs:
            np.testing.assert_array_equal(run[i], want)


def test_kernels_equal_the_integer_arithmetic(tmp_path, monkeypatch):
    """Linear (requantized and float), convolution (stride 2, dilation 2, zero-point
    padding, batch 2) and depthwise: odd K, N not a multiple of 16, M not of 4, full-range
    int8 operands (where vpmaddubsw would saturate) — on the AVX2 path and on every VNNI
    path this CPU has (``vpdpbusd`` with the +128 shift), identical outputs; with AVX-512
    the strided and small-map (<= 64 output pixels) depthwise runs channel-blocked (12 and
    20 channels: partial 16-channel blocks; 110 pixels: two pixel chunks; its counter
    grows) and equals the per-channel path; with AVX-512 VBMI every depthwise runs on
    ``dw_perm`` (several output rows a vector, partial row groups, 16-lane steps with a
    tail, a 5x5 kernel's two 4-tap groups, stride 1x3 with dilation 2; its counter grows)
    and equals the rest."""
    import ctypes

    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(0)

    def ints(*shape):
        return random_int8(rng, *shape)

    def requant(n):
        return random_requant(rng, n)

    xl, wl = ints(7, 3, 37), ints(40, 37)            # linear [7, 3, 37] x [40, 37]^T
    xc, wc = ints(2, 5, 11, 9), ints(20, 5, 3, 3)    # conv, stride 2, dilation 2, pad 2
    xd, wd = ints(1, 12, 10, 13), ints(12, 1, 3, 3)  # depthwise, stride 1 and 2
    xp, wp = ints(1, 5, 9, 35), ints(12, 5, 3, 3)   # conv, stride 1: contiguous im2col runs
    xq, wq = ints(1, 20, 21, 19), ints(20, 1, 3, 3)  # depthwise, stride 2: 110 pixels
    w5 = ints(5, 1, 5, 5)  # depthwise 5x5 on xp: 35 wide (16-lane steps + a tail), 2 groups
    # 4x4 outputs (one vector a plane: 4 channels at a time, 19 = a partial batch)
    xs, xt, ws = ints(1, 19, 4, 4), ints(1, 19, 8, 7), ints(19, 1, 3, 3)
    ep = {"lin": requant(40), "conv": requant(20), "dw": requant(12), "dw2": requant(12),
          "conv1": requant(12), "dw3": requant(12), "p0": requant(12), "p0s2": requant(12),
          "dwq": requant(20), "dw5": requant(5), "s1": requant(19), "s2": requant(19),
          "s3": requant(19), "s4": requant(19)}
    scale, bias = rng.random(40).astype(np.float32), rng.random(40).astype(np.float32)
    ep["linf"] = x86_int8.Epilogue(off=ep["lin"].off, requant=False, scale=scale, bias=bias)
    ep["dwf"] = x86_int8.Epilogue(off=ep["dw"].off, requant=False, scale=scale[:12],
                                  bias=bias[:12])
    # write-back forms: zy not foldable (shift 56: added after the shift), and a clamp past
    # int8 after zy (hi + zy = 132: the 64-bit clamp; small multipliers keep every output
    # inside int8 — past it the AVX2 store saturates and the others wrap, as before)
    nofold = x86_int8.Epilogue(
        off=ep["conv1"].off, requant=True, mult=rng.integers(2 ** 30, 2 ** 31, 12),
        add=(np.int64(1) << 55) + rng.integers(-2 ** 57, 2 ** 57, 12),
        shift=np.full(12, 56, np.int64), lo=-100, hi=120, zy=3)
    wide = x86_int8.Epilogue(off=ep["conv1"].off, requant=True, mult=ep["conv1"].mult,
                             add=(np.int64(1) << 44) + rng.integers(-2 ** 44, 2 ** 44, 12),
                             shift=np.full(12, 45, np.int64), lo=-128, hi=127, zy=5)
    assert x86_int8.kernel_form(ep["conv1"]).zy == 0  # folded: a + zy·2^s, clamp + zy
    assert x86_int8.kernel_form(nofold) is nofold and x86_int8.kernel_form(wide) is wide
    ep.update({"nofold": nofold, "wide": wide})
    # hi32 with a clamp of all of int8 (no byte min / max after the saturating narrowing)
    shift = rng.integers(33, 40, 19).astype(np.int64)
    ep["s5"] = x86_int8.Epilogue(off=ep["s1"].off, requant=True, mult=ep["s1"].mult,
                                 add=(np.int64(1) << (shift - 1)), shift=shift, lo=-128,
                                 hi=127, zy=0)
    assert x86_int8.kernel_form(ep["s5"]).hi32 and x86_int8.kernel_form(ep["s1"]).hi32
    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(list(a.shape), "int8"))
              for n, a in (("xl", xl), ("xc", xc), ("xd", xd), ("xp", xp), ("xq", xq),
                           ("xs", xs), ("xt", xt))]
    with bb.function("main", params):
        with bb.dataflow():
            outs = [x86_int8.emit_linear(bb, params[0], wl, ep["lin"]),
                    x86_int8.emit_linear(bb, params[0], wl, ep["linf"]),
                    x86_int8.emit_conv(bb, params[1], wc, -7, [2, 2], [2, 2], [2, 2],
                                       ep["conv"]),
                    x86_int8.emit_depthwise(bb, params[2], wd, 5, [1, 1], [1, 1], [1, 1],
                                            ep["dw"]),
                    x86_int8.emit_depthwise(bb, params[2], wd, 5, [2, 2], [1, 1], [1, 1],
                                            ep["dw2"]),
                    x86_int8.emit_conv(bb, params[3], wp, 9, [1, 1], [1, 1], [1, 1],
                                       ep["conv1"]),
                    x86_int8.emit_depthwise(bb, params[2], wd, -3, [1, 3], [2, 1], [2, 2],
                                            ep["dw3"]),
                    x86_int8.emit_depthwise(bb, params[2], wd, 5, [2, 2], [1, 1], [1, 1],
                                            ep["dwf"]),
                    # no padding: the VNNI panels read x itself (stride 1 and 2)
                    x86_int8.emit_conv(bb, params[3], wp, 9, [1, 1], [0, 0], [1, 1],
                                       ep["p0"]),
                    x86_int8.emit_conv(bb, params[3], wp, -9, [2, 2], [0, 0], [1, 1],
                                       ep["p0s2"]),
                    x86_int8.emit_depthwise(bb, params[4], wq, -1, [2, 2], [1, 1], [1, 1],
                                            ep["dwq"]),
                    x86_int8.emit_depthwise(bb, params[3], w5, 4, [1, 1], [2, 2], [1, 1],
                                            ep["dw5"]),
                    x86_int8.emit_conv(bb, params[3], wp, 9, [1, 1], [1, 1], [1, 1],
                                       ep["nofold"]),
                    x86_int8.emit_conv(bb, params[3], wp, 9, [1, 1], [1, 1], [1, 1],
                                       ep["wide"]),
                    x86_int8.emit_depthwise(bb, params[2], wd, 5, [1, 1], [1, 1], [1, 1],
                                            ep["nofold"]),
                    x86_int8.emit_depthwise(bb, params[2], wd, 5, [1, 1], [1, 1], [1, 1],
                                            ep["wide"]),
                    x86_int8.emit_depthwise(bb, params[5], ws, -6, [1, 1], [1, 1], [1, 1],
                                            ep["s1"]),
                    x86_int8.emit_depthwise(bb, params[6], ws, 2, [2, 2], [1, 1], [1, 1],
                                            ep["s2"]),
                    x86_int8.emit_depthwise(bb, params[6], ws, 7, [1, 1], [1, 1], [1, 1],
                                            ep["s3"]),
                    x86_int8.emit_depthwise(bb, params[6], ws, -8, [1, 2], [1, 1], [1, 1],
                                            ep["s4"]),
                    x86_int8.emit_depthwise(bb, params[5], ws, 3, [1, 1], [1, 1], [1, 1],
                                            ep["s5"])]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    picked = lib.get_function(x86_int8.ISA_QUERY, query_imports=True)
    args = [tvm.runtime.tensor(a) for a in (xl, xc, xd, xp, xq, xs, xt)]
    runs = {}
    for isa in _isas():  # every kernel this CPU can run (cpuid)
        monkeypatch.setenv("EDGECC_X86_INT8_ISA", isa)
        assert picked() == {"avx2": 0, "avxvnni": 1, "avx512vnni": 2}[isa]  # no fallback
        hi32_ymm = lib.get_function(x86_int8.HI32_YMM, query_imports=True)
        before_ymm = hi32_ymm()
        runs[isa] = [o.numpy() for o in vm["main"](*args)]
        if isa == "avx2":  # the 256-bit high-dword write-back (requant8_hi), as on AVX-512:
            # conv, conv1, p0, p0s2 + the 10 depthwise with hi32 epilogues
            assert hi32_ymm() - before_ymm == 14
        if isa == "avx512vnni" and _has_vbmi():  # every depthwise on dw_perm, no fallback
            perm = lib.get_function(x86_int8.DW_PERM, query_imports=True)
            direct = lib.get_function(x86_int8.DW_DIRECT, query_imports=True)
            direct_hi = lib.get_function(x86_int8.DW_DIRECT_HI, query_imports=True)
            panels = lib.get_function(x86_int8.PERM_PANELS, query_imports=True)
            before, before_direct, before_hi = perm(), direct(), direct_hi()
            interleave = lib.get_function(x86_int8.VBMI_INTERLEAVE, query_imports=True)
            before_panels, before_interleave = panels(), interleave()
            runs["perm"] = [o.numpy() for o in vm["main"](*args)]
            # every convolution has panels that are no 16-byte run within 64 bytes (rows of
            # 35 / 9 columns, strides, the partial last panel): built by perm_panel; those of
            # stride 1 on 35-wide rows (conv1, p0, nofold, wide) have 16-byte runs too: one
            # vpermb a quad (interleave_panel_vbmi)
            assert panels() - before_panels == 6 and interleave() - before_interleave == 4
            assert perm() - before == 13  # dw, dw2, dw3 (1x3, dilation 2), dwf, dwq, dw5, +7
            # s1, s5: 4x4 outputs (1 vector a plane) of 16-byte planes, s2: of 56-byte ones;
            # s3: 8x7 (4 vectors of 2 rows), s4: 8x4 (2 vectors of 4 rows) — every one hi32,
            # so written back from registers (dw_write_hi), none through write_channel
            assert direct() - before_direct == 5 and direct_hi() - before_hi == 5
            # dw2 (hi32: from registers), dwf (float: the sums), dw3 (1x3 stride, dilation
            # 2) — 10x13 planes (130 bytes), 5x7 / 10x4 outputs in 3 vectors: dw_direct's
            # wide planes (128-byte windows by vpermt2b, no padded copy), in this run and the
            # avx512vnni one before it; with the library's switch off, dw_perm
            lib_c = ctypes.CDLL(path)
            wide_calls = ctypes.c_int64.in_dll(lib_c, "edgecc_x86_int8_dw_direct_wide_calls")
            wide_on = ctypes.c_int64.in_dll(lib_c, "edgecc_x86_int8_dw_direct_wide")
            assert wide_calls.value == 6
            wide_on.value = 0
            runs["wide_off"] = [o.numpy() for o in vm["main"](*args)]
            wide_on.value = 1
            # dw_direct's plans are remembered per shape (this run and the ones after it read
            # them from the cache); planned on every call, the same outputs
            plan_cache = ctypes.c_int64.in_dll(lib_c, "edgecc_x86_int8_dw_plan_cache")
            plan_cache.value = 0
            runs["plan_uncached"] = [o.numpy() for o in vm["main"](*args)]
            plan_cache.value = 1
            assert wide_calls.value == 9 and perm() - before == 39
            assert direct() - before_direct == 15 and direct_hi() - before_hi == 15  # s1..s5
            before_direct, before_hi = before_direct + 10, before_hi + 10  # (the checks below)
            # ... and with off folded into the add (fold_min 0: these maps are < 512 outputs)
            fold_min = ctypes.c_int64.in_dll(ctypes.CDLL(path), "edgecc_x86_int8_fold_min")
            fold_min.value = 0
            runs["perm_folded"] = [o.numpy() for o in vm["main"](*args)]
            fold_min.value = 512
            assert direct_hi() - before_hi == 10
            write_hi = ctypes.c_int64.in_dll(lib_c, "edgecc_x86_int8_dw_write_hi")
            write_hi.value = 0  # the sums via write_channel (the library's switch)
            runs["direct_sums"] = [o.numpy() for o in vm["main"](*args)]
            assert direct_hi() - before_hi == 10 and direct() - before_direct == 15
            write_hi.value = 1
            monkeypatch.setenv("EDGECC_X86_PERM_PANEL", "0")  # gather_panel (A/B switch)
            runs["gathers"] = [o.numpy() for o in vm["main"](*args)]
            # perm, wide_off, plan_uncached, perm_folded, direct_sums: none here
            assert panels() - before_panels == 6 * 5
            assert interleave() - before_interleave == 4 * 5
            monkeypatch.delenv("EDGECC_X86_PERM_PANEL")
            ctypes.c_int64.in_dll(lib_c, "edgecc_x86_int8_dw_vbmi").value = 0  # the family off
        if isa == "avx512vnni":  # small maps: the channel-blocked depthwise, no fallback
            blocked = lib.get_function(x86_int8.DW_BLOCKED, query_imports=True)
            hi32 = lib.get_function(x86_int8.HI32, query_imports=True)
            folded = lib.get_function(x86_int8.OFF_FOLDED, query_imports=True)
            # fold off into the add on these small maps too (by default >= 512 outputs a
            # channel); the same library as TVM's handle (dlopen of one path)
            fold_min = ctypes.c_int64.in_dll(ctypes.CDLL(path), "edgecc_x86_int8_fold_min")
            fold_min.value = 0
            before, before_hi, before_fold = blocked(), hi32(), folded()
            runs["blocked"] = [o.numpy() for o in vm["main"](*args)]
            fold_min.value = 512
            assert blocked() - before == 9  # dw2, dw3, dwf, dwq, s2, s4 (strided); s1, s3, s5
            # every requantized conv / depthwise but nofold and wide (zy kept, a clamp past
            # int8) writes back by requant16_hi: conv, conv1, p0, p0s2 + 10 depthwise; all of
            # them with off folded into the 64-bit add (small K: no int32 wrap possible)
            assert hi32() - before_hi == 14 and folded() - before_fold == 14
            ctypes.c_int64.in_dll(ctypes.CDLL(path), "edgecc_x86_int8_dw_vbmi").value = 1
    monkeypatch.delenv("EDGECC_X86_INT8_ISA")
    _probe_write_back(lib, rng)
    monkeypatch.setenv("EDGECC_X86_INT8_ISA", "avx2")  # the 256-bit forms (requant8_hi)
    _probe_write_back(lib, rng)
    monkeypatch.delenv("EDGECC_X86_INT8_ISA")
    assert picked() == {"avx2": 0, "avxvnni": 1, "avx512vnni": 2}[_isas()[-1]]  # the widest
    for isa, outs in runs.items():  # bit-exact across the AVX2 and VNNI paths
        for a, b in zip(outs, runs["avx2"]):
            np.testing.assert_array_equal(a, b, err_msg=isa)
    got = runs["avx2"]

    acc = xl.astype(np.int64) @ wl.astype(np.int64).T
    e = ep["lin"]
    np.testing.assert_array_equal(got[0], _requant(acc, e.off, e.mult, e.add, e.shift,
                                                   e.lo, e.hi, e.zy, -1))
    flt = (acc + e.off).astype(np.int32).astype(np.float32) * scale + bias
    np.testing.assert_array_equal(got[1], flt)
    e = ep["conv"]
    acc = _conv_ref(xc, wc, -7, [2, 2], [2, 2], [2, 2], 1)
    np.testing.assert_array_equal(got[2], _requant(acc, e.off, e.mult, e.add, e.shift,
                                                   e.lo, e.hi, e.zy, 1))
    e = ep["conv1"]
    acc = _conv_ref(xp, wp, 9, [1, 1], [1, 1], [1, 1], 1)
    np.testing.assert_array_equal(got[5], _requant(acc, e.off, e.mult, e.add, e.shift,
                                                   e.lo, e.hi, e.zy, 1))
    for at, key, zx, stride in ((8, "p0", 9, [1, 1]), (9, "p0s2", -9, [2, 2])):
        e = ep[key]
        acc = _conv_ref(xp, wp, zx, stride, [0, 0], [1, 1], 1)
        np.testing.assert_array_equal(got[at], _requant(acc, e.off, e.mult, e.add, e.shift,
                                                        e.lo, e.hi, e.zy, 1), key)
    for at, key, zx, stride, pad, dil in ((3, "dw", 5, [1, 1], [1, 1], [1, 1]),
                                          (4, "dw2", 5, [2, 2], [1, 1], [1, 1]),
                                          (6, "dw3", -3, [1, 3], [2, 1], [2, 2])):
        e = ep[key]
        acc = _conv_ref(xd, wd, zx, stride, pad, dil, 12)
        np.testing.assert_array_equal(got[at], _requant(acc, e.off, e.mult, e.add,
                                                        e.shift, e.lo, e.hi, e.zy, 1), key)
    e = ep["dwq"]
    acc = _conv_ref(xq, wq, -1, [2, 2], [1, 1], [1, 1], 20)
    np.testing.assert_array_equal(got[10], _requant(acc, e.off, e.mult, e.add, e.shift, e.lo,
                                                    e.hi, e.zy, 1), "dwq")
    for at, key in ((12, "nofold"), (13, "wide")):
        e = ep[key]
        acc = _conv_ref(xp, wp, 9, [1, 1], [1, 1], [1, 1], 1)
        np.testing.assert_array_equal(got[at], _requant(acc, e.off, e.mult, e.add, e.shift,
                                                        e.lo, e.hi, e.zy, 1), key)
        acc = _conv_ref(xd, wd, 5, [1, 1], [1, 1], [1, 1], 12)
        np.testing.assert_array_equal(got[at + 2], _requant(acc, e.off, e.mult, e.add, e.shift,
                                                            e.lo, e.hi, e.zy, 1), key)
    for at, key, xv, zx, stride in ((16, "s1", xs, -6, [1, 1]), (17, "s2", xt, 2, [2, 2]),
                                    (18, "s3", xt, 7, [1, 1]), (19, "s4", xt, -8, [1, 2]),
                                    (20, "s5", xs, 3, [1, 1])):
        e = ep[key]
        acc = _conv_ref(xv, ws, zx, stride, [1, 1], [1, 1], 19)
        np.testing.assert_array_equal(got[at], _requant(acc, e.off, e.mult, e.add, e.shift,
                                                        e.lo, e.hi, e.zy, 1), key)
    e = ep["dw5"]
    acc = _conv_ref(xp, w5, 4, [1, 1], [2, 2], [1, 1], 5)
    np.testing.assert_array_equal(got[11], _requant(acc, e.off, e.mult, e.add, e.shift, e.lo,
                                                    e.hi, e.zy, 1), "dw5")
    acc = _conv_ref(xd, wd, 5, [2, 2], [1, 1], [1, 1], 12) + ep["dw"].off.reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(got[7], acc.astype(np.int32).astype(np.float32)
                                  * scale[:12].reshape(1, -1, 1, 1)
                                  + bias[:12].reshape(1, -1, 1, 1))


def _probe_write_back(lib, rng):
    """The requantized write-back alone (``REQUANT_PROBE``: write_channel, AVX-512 where this
    CPU has it and the ISA picked allows, else the 256-bit forms: requant8_hi, requant8) on
    accumulators at the extremes (int32 min / max, 0, ±1), random ones over int32 and near zero,
    and every output step's two sides (v_k - 1, v_k with v_k the least accumulator giving k, where
    the rounding flips — exact ties included: multipliers of 2^30), for shifts 32 .. 62: the
    high-dword form (hi32) and the 64-bit one give exactly the Python-integer arithmetic, and
    kernel_form marks hi32 only for shifts >= 32."""
    import dataclasses

    import tvm

    from edgecc.targets.tvm import x86_int8

    probe = lib.get_function(x86_int8.REQUANT_PROBE, query_imports=True)
    hi32 = lib.get_function(x86_int8.HI32, query_imports=True)
    hi32_ymm = lib.get_function(x86_int8.HI32_YMM, query_imports=True)
    wide = lib.get_function(x86_int8.ISA_QUERY, query_imports=True)() == 2  # AVX-512 VNNI
    shift = np.array([32, 33, 36, 41, 47, 54, 62, 40], np.int64)
    mult = np.array([2 ** 31 - 1, 2 ** 30, *rng.integers(2 ** 30, 2 ** 31, 5), 2 ** 30],
                    np.int64)
    add = [(1 << int(s - 1)) + int(rng.integers(-(1 << int(s - 1)), 1 << int(s - 1))) * w
           for s, w in zip(shift, (1, 0, 1, 1, 1, 1, 0, 0))]
    add[7] += 3 << 31  # a multiple of 2^30 past 2^32: ties every 2^10 accumulators
    add = np.array(add, np.int64)
    for lo, hi in ((-128, 127), (0, 127), (-97, 123)):
        e = x86_int8.kernel_form(x86_int8.Epilogue(
            off=np.zeros(8, np.int32), requant=True, mult=mult, add=add, shift=shift,
            lo=lo, hi=hi))
        assert e.hi32 and not x86_int8.kernel_form(
            dataclasses.replace(e, hi32=False, shift=np.full(8, 31, np.int64))).hi32
        rows = []
        for m, a, s in zip(mult.tolist(), add.tolist(), shift.tolist()):
            edges = [-((a - (k << s)) // m) for k in range(lo, hi + 2)]  # ceil((k·2^s - a) / m)
            v = [-(1 << 31), (1 << 31) - 1, 0, 1, -1, *rng.integers(-(1 << 31), 1 << 31, 64),
                 *rng.integers(-5000, 5000, 64)]
            v += [t + d for t in edges for d in (-1, 0) if -(1 << 31) <= t + d < 1 << 31]
            v = [int(x) for x in v]
            rows.append([v[i % len(v)] for i in range(3 * 256 + 5)])  # 48 vectors + 5 scalar
        acc = np.array(rows, np.int64)
        want = np.array([[min(max((x * m + a) >> s, lo), hi) for x in row]
                         for row, m, a, s in zip(rows, mult.tolist(), add.tolist(),
                                                 shift.tolist())], np.int8)
        for form in (1, 2):
            out = tvm.runtime.tensor(np.zeros(acc.shape, np.int8))
            before, before_ymm = hi32(), hi32_ymm()
            probe(tvm.runtime.tensor(acc.astype(np.int32)), tvm.runtime.tensor(mult),
                  tvm.runtime.tensor(add), tvm.runtime.tensor(shift),
                  tvm.runtime.tensor(np.array([form, lo, hi, 0, *acc.shape], np.int64)), out)
            assert hi32() - before == (form == 2 and wide)
            assert hi32_ymm() - before_ymm == (form == 2 and not wide)
            np.testing.assert_array_equal(out.numpy(), want, f"form {form}, [{lo}, {hi}]")


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, 2, 1)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        x = torch.clamp(self.conv(x), 0, 6)
        x = torch.relu(self.dw(x))
        return self.fc(x.flatten(1))


@pytest.mark.skipif(not _has_vbmi(), reason="dw_direct needs AVX-512 VBMI")
def test_wide_depthwise_planes_equal_the_reference(tmp_path):
    """MobileNetV2's 16x16 stride-2 depthwise (256-byte planes: dw_direct's wide limit, its
    windows ending at the plane's last byte) and 9x13 at stride 2 with a 1x2 padding (117
    bytes: a partial last load) run on dw_direct's wide form — its counter grows, so no silent
    dw_perm — and equal the integer reference; with the switch off (dw_perm) the same."""
    import ctypes

    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(3)
    cases = [((1, 20, 16, 16), -5, [1, 1]), ((2, 6, 9, 13), 7, [1, 2])]
    xs = [random_int8(rng, *shape) for shape, _, _ in cases]
    ws = [random_int8(rng, shape[1], 1, 3, 3) for shape, _, _ in cases]
    eps = [random_requant(rng, shape[1]) for shape, _, _ in cases]
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(list(x.shape), "int8"))
              for i, x in enumerate(xs)]
    with bb.function("main", params):
        with bb.dataflow():
            outs = [x86_int8.emit_depthwise(bb, params[i], ws[i], zx, [2, 2], pad, [1, 1],
                                            eps[i])
                    for i, (_, zx, pad) in enumerate(cases)]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(bb.get().with_attr("external_mods",
                                                [x86_int8.external_module()]), path)
    lib_c = ctypes.CDLL(path)
    calls = ctypes.c_int64.in_dll(lib_c, "edgecc_x86_int8_dw_direct_wide_calls")
    wide = ctypes.c_int64.in_dll(lib_c, "edgecc_x86_int8_dw_direct_wide")
    args = [tvm.runtime.tensor(x) for x in xs]
    got = [o.numpy() for o in vm["main"](*args)]
    assert calls.value == 2
    wide.value = 0
    off = [o.numpy() for o in vm["main"](*args)]
    wide.value = 1
    assert calls.value == 2
    for i, (shape, zx, pad) in enumerate(cases):
        e = eps[i]
        acc = _conv_ref(xs[i], ws[i], zx, [2, 2], pad, [1, 1], shape[1])
        want = _requant(acc, e.off, e.mult, e.add, e.shift, e.lo, e.hi, e.zy, 1)
        np.testing.assert_array_equal(got[i], want)
        np.testing.assert_array_equal(off[i], want)


def test_every_integer_layer_runs_in_the_x86_kernels():
    """No silent fallback: every quantized conv, depthwise conv and linear of the lowered
    module is one call of an x86 kernel, with no int32 accumulator tensor between layers."""
    from edgecc.targets.tvm import lowering, x86_int8

    torch.manual_seed(0)
    model = _Block().eval()
    x = torch.randn(1, 4, 8, 8)
    calib = [(torch.randn(1, 4, 8, 8),) for _ in range(4)]
    program = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(model, (x,)), context=edgecc.PassContext(calibration=calib)).program
    report: dict = {}
    module = lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA, report=report)
    assert report["integer_layers"] == 3 and report["x86_kernels"] == 3, report
    # conv -> depthwise is requantized in the kernel; the depthwise output is flattened first
    assert report["float_layers"] == 0 and report["requantized"] == 1, report
    text = module.script()
    for symbol in x86_int8.SYMBOLS:
        assert text.count(f'"{symbol}"') == 1, symbol
    assert '"int32"' not in text.split("def main")[1]  # no accumulator left in the graph
    assert len(module.attrs["external_mods"]) == 1  # the kernels, linked into the library


def test_gpt2_conv1d_takes_the_x86_linear_kernel():
    """GPT-2's Conv1D (``addmm`` with a stored [in, out] weight) is quantized and lowered to
    the x86 linear kernel (it ran in float before: 0 integer layers)."""
    from edgecc.targets.tvm import lowering, x86_int8
    from tests.passes.quantize.test_addmm import _Conv1DBlock

    torch.manual_seed(0)
    calib = [(torch.randn(2, 5, 16),) for _ in range(4)]
    program = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(_Conv1DBlock().eval(), (torch.randn(2, 5, 16),)),
        context=edgecc.PassContext(calibration=calib)).program
    report: dict = {}
    lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA, report=report)
    assert report["integer_layers"] == 2 and report["x86_kernels"] == 2, report


def _relax_tail(bb, y, act, residual, post_relu, quant):
    """The Relax ops a fused write-back replaces (converters / quant_lowering's lowering)."""
    from tvm import relax

    op = relax.op
    if act == "relu":
        y = bb.emit(op.nn.relu(y))
    elif act == "relu6":
        y = bb.emit(op.clip(y, 0, 6))
    if residual is not None:
        y = bb.emit(op.add(y, residual))
    if post_relu:
        y = bb.emit(op.nn.relu(y))
    qs, qz, qmin, qmax = quant
    q = bb.emit(op.divide(y, relax.const(np.float32(qs))))
    q = bb.emit(op.clip(op.add(op.round(q), relax.const(np.float32(qz))), qmin, qmax))
    return y, bb.emit(op.astype(q, "int8"))


def test_fused_write_back_equals_the_relax_ops(tmp_path, monkeypatch):
    """``x86_int8.Post``: a convolution's float write-back with relu6, a residual add, relu
    and the quantize into the next layer (float and int8 outputs), and a depthwise one with
    relu and only the int8 output, equal the Relax ops they replace bit for bit, on every
    kernel path this CPU has (a fused call that fell back or mis-ordered a float operation
    would differ)."""
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (2, 6, 9, 11)).astype(np.int8)
    w = rng.integers(-128, 128, (20, 6, 3, 3)).astype(np.int8)
    wd = rng.integers(-128, 128, (6, 1, 3, 3)).astype(np.int8)
    res = (rng.standard_normal((2, 20, 9, 11)) * 40).astype(np.float32)

    def flt(n):
        return x86_int8.Epilogue(off=rng.integers(-3000, 3000, n).astype(np.int32),
                                 requant=False,
                                 scale=(rng.random(n) * 1e-3).astype(np.float32),
                                 bias=rng.standard_normal(n).astype(np.float32))

    ec, ed = flt(20), flt(6)
    qc, qd = (0.37, -3.0, -128, 127), (0.011, 5.0, -128, 127)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(list(x.shape), "int8"))
    rv = relax.Var("r", relax.TensorType(list(res.shape), "float32"))
    with bb.function("main", [xv, rv]):
        with bb.dataflow():
            f, q = x86_int8.emit_conv(bb, xv, w, 7, [1, 1], [1, 1], [1, 1], ec, x86_int8.Post(
                act="relu6", residual=rv, post_relu=True, float_out=True, quant=qc))
            (qdw,) = x86_int8.emit_depthwise(bb, xv, wd, -2, [2, 2], [1, 1], [1, 1], ed,
                                             x86_int8.Post(act="relu", float_out=False,
                                                           quant=qd))
            ref_f, ref_q = _relax_tail(bb, x86_int8.emit_conv(
                bb, xv, w, 7, [1, 1], [1, 1], [1, 1], ec), "relu6", rv, True, qc)
            _, ref_qdw = _relax_tail(bb, x86_int8.emit_depthwise(
                bb, xv, wd, -2, [2, 2], [1, 1], [1, 1], ed), "relu", None, False, qd)
            out = bb.emit_output(relax.Tuple([f, q, qdw, ref_f, ref_q, ref_qdw]))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    text = module.script()
    assert text.count('"edgecc_x86_qconv"') == 2 and text.count('"edgecc_x86_qdwconv"') == 2
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    post16 = lib.get_function(x86_int8.POST16, query_imports=True)
    # AVX-512 VNNI: the fused conv's 16-column tiles by post16 (its counter grows; the
    # partial last panel of 99 pixels by post8 / post1), and by post8 alone (A/B switch)
    for isa, post8_only in [(isa, False) for isa in _isas()] + (
            [("avx512vnni", True)] if "avx512vnni" in _isas() else []):
        monkeypatch.setenv("EDGECC_X86_INT8_ISA", isa)
        monkeypatch.setenv("EDGECC_X86_POST16", "0" if post8_only else "1")
        before = post16()
        got = [o.numpy() for o in vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(res))]
        assert post16() - before == (isa == "avx512vnni" and not post8_only)
        np.testing.assert_array_equal(got[0], got[3], err_msg=isa)
        np.testing.assert_array_equal(got[1], got[4], err_msg=isa)
        np.testing.assert_array_equal(got[2], got[5], err_msg=isa)
        assert len(np.unique(got[1])) > 50 and len(np.unique(got[2])) > 20  # not saturated


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 8, 3, 1, 1)
        self.conv = nn.Conv2d(8, 8, 3, 1, 1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.head(torch.relu(self.conv(y) + y))


def test_residual_block_keeps_no_float_round_trip(tmp_path):
    """A ResNet basic block's float add / relu / quantize run inside the convolutions'
    write-back: the lowered module has no Relax relu and no Relax quantize (the input's is an
    edgecc_x86_quantize call), the report counts the fused write-backs, and the library's
    output is within one step of the head's input of the simulator's."""
    import tvm
    import tvm.relax

    from edgecc.quant import is_quantize
    from edgecc.targets.tvm import lowering, x86_int8

    torch.manual_seed(0)
    model = _Residual().eval()
    x = torch.randn(1, 4, 8, 8)
    calib = [(torch.randn(1, 4, 8, 8),) for _ in range(4)]
    program = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(model, (x,)), context=edgecc.PassContext(calibration=calib)).program
    report: dict = {}
    module = lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA, report=report)
    # the stem: relu + quantize (float kept for the skip); the conv: + skip, relu, quantize
    assert report["fused_write_back"] == 2 and report["fused_residual"] == 1, report
    main = module.script().split("def main")[1]
    # the input's quantize: edgecc_x86_quantize (test_x86_int8_quantize), no Relax divide
    assert "R.nn.relu" not in main and main.count("R.divide") == 0, main
    assert main.count(f'"{x86_int8.QUANTIZE}"') == 1, main
    path = str(tmp_path / "m.so")
    lowering.build(module, lowering.llvm_target(None, 2), path)
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    q = [n for n in program.nodes("call_function") if is_quantize(n)][-1]
    step = float(program.tensor(q.args[1]).max())
    bound = step * model.head.weight.detach().abs().sum(dim=(1, 2, 3)).max().item() + 1e-5
    for seed in range(2):
        torch.manual_seed(seed)
        fresh = torch.randn(1, 4, 8, 8)
        got = vm["main"](tvm.runtime.tensor(fresh.numpy()))
        got = torch.from_numpy((got[0] if not hasattr(got, "numpy") else got).numpy())
        assert (got - program.run(fresh)[0]).abs().max() <= bound


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(torch.clamp(self.conv(x), 0, 6).mean(dim=(2, 3)))


def test_float_output_conv_takes_its_relu6_in_the_write_back(tmp_path):
    """MobileNetV2's last conv: relu6 into a float mean (no quantize after it). The relu6 runs
    in the convolution's write-back (``Post(act)``), not as a Relax clip, and the library's
    output equals the simulator's within the fc input's quantization step."""
    import tvm
    import tvm.relax

    from edgecc.quant import is_quantize
    from edgecc.targets.tvm import lowering, x86_int8

    torch.manual_seed(0)
    model = _Head().eval()
    x = torch.randn(1, 4, 6, 6)
    calib = [(torch.randn(1, 4, 6, 6),) for _ in range(4)]
    program = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(model, (x,)), context=edgecc.PassContext(calibration=calib)).program
    report: dict = {}
    module = lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA, report=report)
    assert report.get("fused_act") == 1 and report["x86_kernels"] == 2, report
    main = module.script().split("def main")[1]
    # no Relax clip: the two quantizes (input, fc input: the mean's) are edgecc_x86_quantize
    assert main.count("R.clip(") == main.count("R.divide(") == 0, main
    assert main.count(f'"{x86_int8.QUANTIZE}"') == 2, main
    path = str(tmp_path / "m.so")
    lowering.build(module, lowering.llvm_target(None, 2), path)
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    q = [n for n in program.nodes("call_function") if is_quantize(n)][-1]
    step = float(program.tensor(q.args[1]).max())
    bound = step * model.fc.weight.detach().abs().sum(dim=1).max().item() + 1e-5
    for seed in range(2):
        torch.manual_seed(seed)
        fresh = torch.randn(1, 4, 6, 6)
        got = vm["main"](tvm.runtime.tensor(fresh.numpy()))
        got = torch.from_numpy((got[0] if not hasattr(got, "numpy") else got).numpy())
        assert (got - program.run(fresh)[0]).abs().max() <= bound
