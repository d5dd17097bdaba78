"""The weight-only kernel's AMX-BF16 prefill (``x86_wonly``, isa 5 / ``auto`` with
``bf16_activations`` on AMX-BF16 CPUs): its output is ``bf16(x) @ (hi + lo).T + b`` within
float32 summation error, where hi = bf16(w) and lo = bf16(w - hi) split each dequantized
weight; within ``x86_wonly.amx_error_bound`` of the float32 reference; really taken where it
should be (``edgecc_x86_wonly_amx_calls``: a silent fallback fails here) and not where it
should not (fewer than 16 rows, K not a multiple of 32, builds that did not allow bf16, either
knob off)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.targets.tvm.test_x86_wonly import FORMATS, _cpu_flags, _run
from tests.targets.tvm.test_x86_wonly_bf16 import _weight, bf16, kernel, lib  # noqa: F401

pytestmark = pytest.mark.skipif(
    not {"amx_bf16", "amx_tile", "avx512_bf16", "avx512bw"} <= _cpu_flags(),
    reason="AMX-BF16 CPUs")


def _var(lib, name: str) -> ctypes.c_int64:
    return ctypes.c_int64.in_dll(lib, f"edgecc_x86_wonly_{name}")


def split(w: np.ndarray) -> np.ndarray:
    """hi + lo as the kernel builds them (float64 sum of two bf16 values)."""
    w = np.asarray(w, np.float32)
    hi = bf16(w)
    lo = bf16(w - hi)  # w - hi is exact in float32
    assert np.all(np.abs(hi.astype(np.float64) + lo - w) <= 2.0 ** -16 * np.abs(w))
    return hi.astype(np.float64) + lo.astype(np.float64)


def _check(kernel, lib, packed, w, x, bias):
    """One AMX call: the counter moves, tight against bf16(x) @ (hi + lo), within the stated
    bound against float32 x, and the tight check catches one wrong weight."""
    from edgecc.targets.tvm import x86_wonly

    k = packed.k
    calls = _var(lib, "amx_calls")
    before = calls.value
    y = _run(kernel, packed, x, bias, "amx")
    assert calls.value == before + 1  # the tiles ran
    b = np.zeros(packed.n) if bias is None else bias.astype(np.float64)
    xr, ws = bf16(x).astype(np.float64), split(w)
    mag = np.abs(xr) @ np.abs(ws).T + np.abs(b)
    n, u = 2 * k + 1, 2.0 ** -23
    tight = n * u / (1 - n * u) * mag
    assert np.all(np.abs(y - (xr @ ws.T + b)) <= tight)
    bound = x86_wonly.amx_error_bound(k) * (np.abs(x) @ np.abs(w).T + np.abs(b))
    assert np.all(np.abs(y - (x.astype(np.float64) @ w.T.astype(np.float64) + b)) <= bound)
    ws_wrong, r = ws.copy(), min(5, packed.n - 1)
    ws_wrong[r, 7] += float(np.abs(w[r]).max() + 0.01)
    assert np.any(np.abs(y - (xr @ ws_wrong.T + b)) > tight)
    return y


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f[1] % 32 == 0],
                         ids=lambda f: f"{f[0]}-k{f[1]}-g{f[2]}" + ("-off" if f[3] else "")
                         + ("-f16" if f[4] else ""))
def test_amx_prefill_is_bf16_x_times_the_split_weights(kernel, lib, fmt):
    """Every format with whole 32-k steps, offsets (Q4_1) included: the tiles' weights are
    the float32 dequantization split in two, so offsets and odd groups fold in."""
    dtype, k, group, offset, f16 = fmt
    packed, w, rng = _weight(dtype, k, group, offset, f16, seed=k + group)
    bias = rng.normal(size=packed.n).astype(np.float32)
    for m in (16, 17, 40, 301):  # one tile, a tail row, a 16-row tail tile, row blocks
        x = rng.normal(size=(m, k)).astype(np.float32)
        _check(kernel, lib, packed, w, x, bias if m != 17 else None)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(16, 160), kb=st.integers(1, 12), n=st.integers(1, 100),
       dtype=st.sampled_from(["int4", "uint4", "int8"]), group=st.sampled_from([0, 32, 96]),
       seed=st.integers(0, 2 ** 16))
def test_amx_prefill_on_generated_shapes(kernel, lib, m, kb, n, dtype, group, seed):
    """Generated shapes: rows not a multiple of 16 / 32, partial panels (n % 32), groups
    that do not divide K, per-channel scales."""
    k = 32 * kb
    packed, w, rng = _weight(dtype, k, group, n=n, seed=seed)
    x = rng.normal(size=(m, k)).astype(np.float32) * rng.uniform(0.1, 10.0)
    _check(kernel, lib, packed, w, x, rng.normal(size=n).astype(np.float32))


def test_auto_takes_the_tiles_only_where_they_apply(kernel, lib):
    import tvm

    packed, w, rng = _weight("uint4", 256, 128, seed=3)
    bias = rng.normal(size=packed.n).astype(np.float32)
    b = np.zeros(packed.codes.shape[0] * 32, np.float32)
    b[: packed.n] = bias

    def run(isa, allow, x, p=packed):
        args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (
            x, p.codes, p.scale, p.zero, np.zeros(1, np.float32), b,
            p.meta(len(x), True, isa, bf16_activations=allow))]
        out = tvm.runtime.tensor(np.zeros((len(x), p.n), np.float32))
        kernel(*args, out)
        return out.numpy()

    x = rng.normal(size=(50, 256)).astype(np.float32)
    amx_knob, bf16_knob = _var(lib, "amx"), _var(lib, "bf16")
    amx_calls, bf16_calls = _var(lib, "amx_calls"), _var(lib, "bf16_calls")
    assert amx_knob.value == 1 and bf16_knob.value == 1
    tiles, vdp, fp32 = run("amx", False, x), run("avx512bf16", False, x), run("avx512", True, x)
    assert not np.array_equal(tiles, vdp) and not np.array_equal(tiles, fp32)
    a0, b0 = amx_calls.value, bf16_calls.value
    assert np.array_equal(run("auto", True, x), tiles) and amx_calls.value == a0 + 1
    assert np.array_equal(run("auto", False, x), fp32)  # imported weights: float32
    assert np.array_equal(run("auto", True, x[:15]), vdp[:15])  # under 16 rows: vdpbf16ps
    assert amx_calls.value == a0 + 1 and bf16_calls.value == b0 + 1
    try:
        amx_knob.value = 0
        assert np.array_equal(run("auto", True, x), vdp)
        amx_knob.value, bf16_knob.value = 1, 0
        assert np.array_equal(run("auto", True, x), fp32)
    finally:
        amx_knob.value, bf16_knob.value = 1, 1
    assert amx_calls.value == a0 + 1 and bf16_calls.value == b0 + 2
    odd, _, _ = _weight("uint4", 100, 64, seed=4)  # K % 32 != 0: the vdpbf16ps path
    xo = rng.normal(size=(40, 100)).astype(np.float32)
    assert np.array_equal(run("auto", True, xo, odd), run("avx512bf16", False, xo, odd))
    assert amx_calls.value == a0 + 1


def test_row_blocks_give_the_same_bits(kernel, lib):
    """Each row's sums do not depend on the pool split (amx_rows 0: whole panels, 32, 64,
    100 -> 128)."""
    rows = _var(lib, "amx_rows")
    packed, w, rng = _weight("int4", 96, 32, n=200, seed=11)
    x = rng.normal(size=(301, 96)).astype(np.float32)
    out = {}
    try:
        for value in (0, 32, 64, 100):
            rows.value = value
            out[value] = _run(kernel, packed, x, None, "amx")
    finally:
        rows.value = 64
    assert all(np.array_equal(out[0], o) for o in out.values())


@pytest.mark.parametrize("shape", [(1024, 384, 384), (1024, 1536, 384)],
                         ids=["minilm-qkvo", "minilm-ffn-down"])
def test_minilm_shapes_error_against_the_float32_path(kernel, lib, shape):
    """MiniLM's w4a16 linears (int4 g32 as the main job's): max|tiles - float32 path| /
    max|ref| under 2^-8 (x's bf16 rounding; the per-element bound is amx_error_bound)."""
    m, k, n = shape
    packed, w, rng = _weight("int4", k, 32, n=n, seed=m + k)
    x = rng.normal(size=(m, k)).astype(np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    diff = np.abs(_run(kernel, packed, x, None, "amx")
                  - _run(kernel, packed, x, None, "avx512")).max()
    assert diff / np.abs(ref).max() < 2.0 ** -8
