"""The weight-only kernel's AVX512_BF16 prefill (``x86_wonly``, isa 4 / ``auto`` with
``bf16_activations``): its output is ``bf16(x) @ dequant(W).T + b`` within float32
summation error (the weights' q - z exact, only x rounded), within
``x86_wonly.bf16_error_bound`` of the float32 reference, and it is really taken where it
should be (``edgecc_x86_wonly_bf16_calls``: a silent fallback to the float32 path fails
here) and not where it should not (offsets, decode rows, builds that did not allow it, the
knob off)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.targets.tvm.test_x86_wonly import FORMATS, _cpu_flags, _quantized, _run

pytestmark = pytest.mark.skipif(not {"avx512_bf16", "avx512bw"} <= _cpu_flags(),
                                reason="AVX512_BF16 CPUs")


@pytest.fixture(scope="module")
def kernel():
    tvm_ffi = pytest.importorskip("tvm_ffi")
    from edgecc.targets.tvm import x86_wonly

    return tvm_ffi.load_module(x86_wonly.shared_library())[x86_wonly.LINEAR]


@pytest.fixture(scope="module")
def lib():
    from edgecc.targets.tvm import x86_wonly

    return ctypes.CDLL(x86_wonly.shared_library())  # the copy the kernel fixture loaded


def _counter(lib) -> ctypes.c_int64:
    return ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_bf16_calls")


@pytest.fixture
def no_amx(lib):
    """The AMX-BF16 prefill off (it takes ``auto``'s prefill on AMX CPUs;
    test_x86_wonly_amx covers it), restored after."""
    knob = ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_amx")
    assert knob.value == 1
    knob.value = 0
    yield
    knob.value = 1


def _bf16_calls(lib) -> int:
    """Prefill calls with bf16 activations: the vdpbf16ps path's and the AMX tiles'."""
    return sum(ctypes.c_int64.in_dll(lib, f"edgecc_x86_wonly_{n}_calls").value
               for n in ("bf16", "amx"))


def bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) -> float32, as vcvtne2ps2bf16 (finite x)."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return r.astype(np.uint32).view(np.float32)


def _weight(dtype, k, group, offset=False, f16=False, n=70, seed=0):
    from edgecc.targets.tvm import x86_wonly

    rng = np.random.default_rng(seed)
    values, axis, block, w = _quantized(rng, n, dtype, k, group, offset, f16)
    packed, why = x86_wonly.plan(values, axis, block, dtype)
    assert packed is not None, why
    return packed, w, rng


def _ref(x, w, b):
    return x.astype(np.float64) @ w.T.astype(np.float64) + b


@pytest.mark.parametrize("fmt", [f for f in FORMATS if not f[3]] + [("int8", 99, 0, False,
                                                                     False)],
                         ids=lambda f: f"{f[0]}-k{f[1]}-g{f[2]}" + ("-f16" if f[4] else ""))
def test_bf16_prefill_is_bf16_x_times_the_exact_weights(kernel, lib, fmt):
    from edgecc.targets.tvm import x86_wonly

    dtype, k, group, _, f16 = fmt
    packed, w, rng = _weight(dtype, k, group, f16=f16, seed=k + group)
    bias = rng.normal(size=packed.n).astype(np.float32)
    ng = -(-k // group) if group else 1
    for m in (5, 13, 301):  # the 6-row tile and its tails, row blocks
        x = rng.normal(size=(m, k)).astype(np.float32)
        before = _counter(lib).value
        y = _run(kernel, packed, x, bias, "avx512bf16")
        assert _counter(lib).value == before + 1  # the bf16 path ran
        xr = bf16(x)
        mag = np.abs(xr) @ np.abs(w).T + np.abs(bias)
        # against bf16(x): only float32 summation (K products, NG scalings, the bias)
        tight = x86_wonly.error_bound(k + 2 * ng) * mag
        assert np.all(np.abs(y - _ref(xr, w, bias)) <= tight)
        # against float32 x: the stated bound
        bound = x86_wonly.bf16_error_bound(k, ng) * (np.abs(x) @ np.abs(w).T + np.abs(bias))
        assert np.all(np.abs(y - _ref(x, w, bias)) <= bound)
        # the tight bound catches one wrong code step
        w_wrong = w.copy()
        w_wrong[5, 7] += float(np.abs(w[5]).max() + 0.01)
        assert np.any(np.abs(y - _ref(xr, w_wrong, bias)) > tight)


def test_auto_takes_bf16_only_where_allowed_and_the_knob_turns_it_off(kernel, lib, no_amx):
    import tvm

    packed, w, rng = _weight("uint4", 256, 128, seed=3)
    x = rng.normal(size=(50, 256)).astype(np.float32)
    bias = rng.normal(size=packed.n).astype(np.float32)
    b = np.zeros(packed.codes.shape[0] * 32, np.float32)
    b[: packed.n] = bias

    def run(isa, allow, rows=None):
        args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (
            x if rows is None else x[:rows], packed.codes, packed.scale, packed.zero,
            np.zeros(1, np.float32), b, packed.meta(50, True, isa, bf16_activations=allow))]
        out = tvm.runtime.tensor(np.zeros((50 if rows is None else rows, packed.n),
                                          np.float32))
        kernel(*args, out)
        return out.numpy()

    knob, calls = ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_bf16"), _counter(lib)
    assert knob.value == 1
    pinned, fp32 = run("avx512bf16", False), run("avx512", True)
    assert not np.array_equal(pinned, fp32)  # x really rounded
    before = calls.value
    assert np.array_equal(run("auto", True), pinned) and calls.value == before + 1
    assert np.array_equal(run("auto", False), fp32) and calls.value == before + 1
    assert np.array_equal(run("auto", True, rows=4), fp32[:4])  # decode rows: float32
    assert calls.value == before + 1
    try:
        knob.value = 0
        assert np.array_equal(run("auto", True), fp32) and calls.value == before + 1
    finally:
        knob.value = 1


def test_offsets_keep_the_float32_path(kernel, lib):
    packed, w, rng = _weight("uint4", 64, 32, offset=True, f16=True)  # Q4_1
    x = rng.normal(size=(20, 64)).astype(np.float32)
    before = _counter(lib).value
    assert np.array_equal(_run(kernel, packed, x, None, "avx512bf16"),
                          _run(kernel, packed, x, None, "avx512"))
    assert _counter(lib).value == before


def test_row_blocks_give_the_same_bits(kernel, lib):
    """Each row's sums do not depend on the pool split (0: whole panels, 5, 48)."""
    rows = ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_rows")
    packed, w, rng = _weight("int4", 96, 32, n=200, seed=11)
    x = rng.normal(size=(301, 96)).astype(np.float32)
    out = {}
    try:
        for value in (0, 5, 48):
            rows.value = value
            out[value] = _run(kernel, packed, x, None, "avx512bf16")
    finally:
        rows.value = 48
    assert np.array_equal(out[0], out[5]) and np.array_equal(out[0], out[48])


@pytest.mark.parametrize("shape", [(1024, 384, 384), (1024, 1536, 384)],
                         ids=["minilm-qkvo", "minilm-ffn-down"])
def test_minilm_shapes_error_against_the_float32_path(kernel, shape):
    """MiniLM's w4a16 linears (uint4 g128): max|bf16 path - float32 path| / max|ref| under
    2^-8 (measured 1.6-1.8e-3, x ~ N(0, 1); the per-element bound is bf16_error_bound)."""
    m, k, n = shape
    packed, w, rng = _weight("uint4", k, 128, n=n, seed=m + k)
    x = rng.normal(size=(m, k)).astype(np.float32)
    ref = _ref(x, w, 0)
    diff = np.abs(_run(kernel, packed, x, None, "avx512bf16")
                  - _run(kernel, packed, x, None, "avx512")).max()
    assert diff / np.abs(ref).max() < 2.0 ** -8


def test_host_build_rounds_only_edgecc_quantized_weights(tmp_path):
    """End to end: a host build of a program edgecc's Quantize pass made w4a16 takes the bf16
    prefill, on AMX tiles where the CPU has them (its library's counters move; outputs
    within 2^-7 of max |y| of the same library
    with the knob off, cosine >= 0.9999, verification passed); the same linears with
    imported-style dequantize weights (no Quantize pass) keep float32 activations."""
    import torch
    import torch.nn as nn

    import edgecc
    from tests.targets.tvm.test_x86_wonly import _Quantized

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64)).eval()
    x = torch.randn(2, 20, 64)
    res = edgecc.compile(edgecc.trace(model, (x,)), target="host", progress=False,
                         output_dir=str(tmp_path / "q"), example_inputs=(x,),
                         pipeline="quantize{scheme=w4a16,group_size=32},dce")
    assert res.report["verification"]["passed"]
    res.run(x)  # loads the library
    lib = ctypes.CDLL(res._runner.library)
    knob = ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_bf16")
    before = _bf16_calls(lib)
    y = np.asarray(res.run(x)).reshape(-1)
    assert _bf16_calls(lib) > before  # the bf16 prefill ran
    try:
        knob.value = 0
        y32 = np.asarray(res.run(x)).reshape(-1)
    finally:
        knob.value = 1
    assert not np.array_equal(y, y32)
    assert np.abs(y - y32).max() < 2.0 ** -7 * np.abs(y32).max()
    cos = (y * y32).sum() / np.sqrt((y * y).sum() * (y32 * y32).sum())
    assert cos >= 0.9999

    imported = _Quantized(np.random.default_rng(0)).eval()
    xi = torch.randn(2, 5, 64)
    res = edgecc.compile(edgecc.trace(imported, (xi,)), target="host", progress=False,
                         output_dir=str(tmp_path / "i"), example_inputs=(xi,))
    res.run(xi)
    lib = ctypes.CDLL(res._runner.library)
    before = _bf16_calls(lib)
    res.run(xi)
    assert _bf16_calls(lib) == before  # float32 activations: verified against the model
