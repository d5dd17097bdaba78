"""The x86 weight-only kernels (``x86_wonly``): the weights they compute with are
bit-identical to ``edgecc.dequantize`` / ``dequantize_offset``, the outputs within the
float32 summation-order bound of ``x @ dequant(W).T + b`` on every ISA path this CPU has,
and host builds really call them (a quantized linear that silently fell back to folded
float32 weights fails here)."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc import quant

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="x86-64 kernels")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":")[1]
                       .split())
    except (OSError, StopIteration):
        return set()


def _isas() -> list[str]:
    flags = _cpu_flags()
    return (["scalar"] + (["avx2"] if {"avx2", "fma", "f16c"} <= flags else [])
            + (["avx512"] if "avx512f" in flags else []))


@pytest.fixture(scope="module")
def kernel():
    tvm_ffi = pytest.importorskip("tvm_ffi")
    from edgecc.targets.tvm import x86_wonly

    return tvm_ffi.load_module(x86_wonly.shared_library())[x86_wonly.LINEAR]


RANGES = {"int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255)}
# (dtype, K, group (0: per output channel), offset, scales exact in float16)
FORMATS = [("int4", 96, 32, False, False),      # w4a16 symmetric g32
           ("uint4", 100, 64, False, False),    # asymmetric, a partial last group
           ("uint4", 64, 32, True, True),       # Q4_1: fp16 d and m
           ("int4", 256, 128, False, False),
           ("int8", 80, 32, False, True),       # Q8_0
           ("int8", 72, 0, False, False),       # w8 per channel
           ("uint8", 40, 32, False, False)]


def _quantized(rng, n, dtype, k, group, offset, f16):
    """Stored codes and parameters of an [n, k] weight, and its float32 dequantization
    by ``edgecc.quant`` (the reference)."""
    lo, hi = RANGES[dtype]
    fmt = quant.qformat(dtype)
    q = rng.integers(lo, hi + 1, (n, k))
    ng = -(-k // group) if group else 1
    scale = rng.uniform(0.01, 0.1, (n, ng)).astype(np.float16 if f16 else np.float32)
    scale = scale.astype(np.float32)
    zero = rng.integers(lo, hi + 1, (n, ng)).astype(np.uint8 if dtype.startswith("u")
                                                     else np.int8)
    if dtype == "int4":
        zero[:] = 0  # symmetric: one uniform zero point
    off = rng.normal(size=(n, ng)).astype(np.float16).astype(np.float32) if offset else None
    stored = (quant.pack_int4(torch.from_numpy(q).to(torch.int16), -1).numpy() if fmt.packed
              else q.astype(zero.dtype))
    axis, block = (1, group) if group else (0, 0)
    if not group:
        scale, zero = scale[:, 0], zero[:, 0]
        off = None if off is None else off[:, 0]
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (stored, scale, zero)]
    if off is None:
        ref = quant.dequantize(*t, axis, block, dtype, torch.float32)
    else:
        ref = quant.dequantize_offset(*t, torch.from_numpy(off), axis, block, dtype,
                                      torch.float32)
    return [stored, scale, zero, off], axis, block, ref.numpy()


def _run(kernel, packed, x, bias, isa):
    import tvm

    m = x.shape[0]
    b = np.zeros(packed.codes.shape[0] * 32 if bias is not None else 1, np.float32)
    if bias is not None:
        b[: packed.n] = bias
    offset = packed.offset if packed.offset is not None else np.zeros(1, np.float32)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (
        x, packed.codes, packed.scale, packed.zero, offset, b,
        packed.meta(m, bias is not None, isa))]
    out = tvm.runtime.tensor(np.zeros((m, packed.n), np.float32))
    kernel(*args, out)
    return out.numpy()


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f[0]}-k{f[1]}-g{f[2]}"
                         + ("-offset" if f[3] else "") + ("-f16" if f[4] else ""))
def test_kernel_equals_dequantize_then_matmul(kernel, isa, fmt):
    from edgecc.targets.tvm import x86_wonly

    dtype, k, group, offset, f16 = fmt
    rng = np.random.default_rng(k + group)
    n = 70  # two full panels of 32 and a partial one
    values, axis, block, w = _quantized(rng, n, dtype, k, group, offset, f16)
    packed, why = x86_wonly.plan(values, axis, block, dtype)
    assert packed is not None, why
    assert np.array_equal(packed.dequantized(), w)  # bit-identical weights
    assert (packed.scale.dtype == np.float16) == f16
    bias = rng.normal(size=n).astype(np.float32)
    for m in (1, 3, 13):  # GEMV from registers (1, and 3 on AVX-512), dequantized panel
        x = rng.normal(size=(m, k)).astype(np.float32)
        y = _run(kernel, packed, x, bias if m != 3 else None, isa)
        b = bias if m != 3 else np.zeros(n, np.float32)
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
        bound = x86_wonly.error_bound(k) * (np.abs(x) @ np.abs(w).T + np.abs(b))
        assert np.all(np.abs(y - ref) <= bound), float((np.abs(y - ref) / bound).max())
        # the bound is tight enough to catch one wrong code step
        w_wrong = w.copy()
        w_wrong[5, 7] += float(np.abs(w[5]).max() + 0.01)
        wrong = x.astype(np.float64) @ w_wrong.T.astype(np.float64) + b
        assert np.any(np.abs(y - wrong) > bound)



@pytest.mark.parametrize("isa", _isas())
def test_prefill_row_blocks_give_the_same_bits_and_count(kernel, isa):
    """Prefill (M > 4) pool items are (panel, block of ``edgecc_x86_wonly_rows`` rows), so
    two threads' last items are small: with or without the output prefetch
    (``edgecc_x86_wonly_prefetch``), every row block (0: whole panels, the split before;
    5: not a multiple of the 12-row tile; 48: the default; the pool's two threads where TVM
    has two) gives the same bits, and ``edgecc_x86_wonly_row_items`` counts the split calls
    (a split that silently fell back to whole panels fails here)."""
    import ctypes

    from edgecc.targets.tvm import x86_wonly

    lib = ctypes.CDLL(x86_wonly.shared_library())  # the copy the kernel fixture loaded
    rows = ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_rows")
    calls = ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_row_items")
    assert rows.value == 48
    rng = np.random.default_rng(11)
    n, k = 200, 96  # 7 panels, the last partial
    values, axis, block, w = _quantized(rng, n, "int4", k, 32, False, False)
    packed, why = x86_wonly.plan(values, axis, block, "int4")
    assert packed is not None, why
    bias = rng.normal(size=n).astype(np.float32)
    x = rng.normal(size=(301, k)).astype(np.float32)  # 7 x 301 x 96: a pooled job
    out = {}
    try:
        for value in (0, 5, 48, 76, 1000):
            rows.value = value
            before = calls.value
            out[value] = _run(kernel, packed, x, bias, isa)
            assert calls.value - before == (0 < 4 * value <= 301), value  # 4+ blocks
    finally:
        rows.value = 48
    prefetch = ctypes.c_int64.in_dll(lib, "edgecc_x86_wonly_prefetch")
    assert prefetch.value == 1
    try:  # the output lines prefetched before each tile (default) or not: same bits
        prefetch.value = 0
        unfetched = _run(kernel, packed, x, bias, isa)
    finally:
        prefetch.value = 1
    assert np.array_equal(unfetched, out[48])
    for value in (5, 48, 76, 1000):
        assert np.array_equal(out[value], out[0]), value
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    bound = x86_wonly.error_bound(k) * (np.abs(x) @ np.abs(w).T + np.abs(bias))
    assert np.all(np.abs(out[48] - ref) <= bound)
    before = calls.value
    small = _run(kernel, packed, x[:4], bias, isa)  # decode rows stay whole panels
    assert calls.value == before and np.array_equal(small, out[0][:4])

def test_w4a16_reads_under_a_sixth_of_the_float32_weight_bytes():
    """Issue 18 goal 4: a w4a16 linear (int4, groups of 32, float32 scales, symmetric) reads
    its codes and scales only: 0.5 + 4/32 bytes a weight, under 1/6 of float32's 4."""
    from edgecc.targets.tvm import x86_wonly

    rng = np.random.default_rng(6)
    n, k = 256, 384  # MiniLM's attention linears: whole panels of 32
    values, axis, block, _ = _quantized(rng, n, "int4", k, 32, False, False)
    packed, why = x86_wonly.plan(values, axis, block, "int4")
    assert packed is not None, why
    assert packed.nbytes * 6 < 4 * n * k, packed.nbytes / (4 * n * k)


class _Quantized(nn.Module):
    """Linears whose weights are edgecc quantization ops on buffers: Q4_1-style
    ``dequantize_offset`` (uint4 g32, fp16 scales and offsets), Q8_0-style int8 g32, and
    w4a16 symmetric int4 g32 feeding a gelu."""

    def __init__(self, rng):
        super().__init__()
        self.parts = []
        for i, (dtype, group, offset, f16) in enumerate(
                [("uint4", 32, True, True), ("int8", 32, False, True),
                 ("int4", 32, False, False)]):
            values, axis, block, _ = _quantized(rng, 48, dtype, 64, group, offset, f16)
            for j, v in enumerate(values):
                if v is not None:
                    self.register_buffer(f"w{i}_{j}", torch.from_numpy(np.ascontiguousarray(v)))
            self.parts.append((i, dtype, axis, block, offset))
        self.b = nn.Parameter(torch.randn(48))
        self.proj = nn.Linear(48 * 3, 24)

    def weight(self, i):
        _, dtype, axis, block, offset = self.parts[i]
        q, s, z = (getattr(self, f"w{i}_{j}") for j in range(3))
        if offset:
            return torch.ops.edgecc.dequantize_offset(q, s, z, self.w0_3, axis, block, dtype,
                                                      torch.float32)
        return torch.ops.edgecc.dequantize(q, s, z, axis, block, dtype, torch.float32)

    def forward(self, x):
        a = nn.functional.linear(x, self.weight(0), self.b)
        c = nn.functional.linear(x, self.weight(1))
        d = nn.functional.gelu(nn.functional.linear(x, self.weight(2), self.b))
        return self.proj(torch.cat([a, c, d], dim=-1))


def test_host_build_calls_the_kernel_for_every_quantized_linear(tmp_path):
    pytest.importorskip("tvm")
    from edgecc.targets.tvm import lowering

    module = _Quantized(np.random.default_rng(0)).eval()
    x = torch.randn(2, 5, 64)
    program = edgecc.trace(module, (x,))
    relax_mod = lowering.to_relax(program)
    text = relax_mod.script()
    assert text.count('"edgecc_x86_wlinear"') == 3  # the fp32 proj stays a matmul
    # no float32 [48, 64] weight left: nothing was dequantized at compile time
    assert "R.Tensor((48, 64), dtype=\"float32\")" not in text
    arm = lowering.to_relax(program, integer_kernels=True, isa="generic")
    assert "edgecc_x86_wlinear" not in arm.script()  # arm64 builds never take it

    res = edgecc.compile(program, target="host", output_dir=str(tmp_path / "out"),
                         example_inputs=(x,), progress=False)
    wonly = res.report["lowering"]["integer_kernels"]["weight_only"]
    assert wonly["weight_only_layers"] == 3 and wonly["float_fallbacks"] == []
    assert wonly["weight_only_bytes"] * 3 < wonly["float32_weight_bytes"]  # int4, int4, int8
    assert res.report["verification"]["passed"]
    x2 = torch.randn(2, 5, 64)  # a fresh input
    with torch.no_grad():
        ref = module(x2)
    torch.testing.assert_close(res.run(x2), ref, rtol=1e-4, atol=1e-5)


def test_gguf_q4_1_import_keeps_its_quantization_for_the_kernel(tmp_path):
    """``edgecc.load(..., keep_q4_1=True)``: a Q4_1 file (edgecc's asymmetric w4a16 g32
    written by -t gguf) comes back as ``dequantize_offset`` on every projection, computing
    the same values as the float import, and each of those linears takes the kernel."""
    gguf = pytest.importorskip("gguf")
    from edgecc.passes import Quantize
    from edgecc.quant import is_dequantize_offset
    from edgecc.targets.gguf import GgufOptions, GgufTarget
    from edgecc.targets.tvm import x86_wonly
    from tests.targets.gguf import tiny

    program = Quantize()(tiny.trace(tiny.llama_gqa()).copy(),
                         Quantize.Options(scheme="w4a16", group_size=32)).program
    GgufTarget().lower(program, str(tmp_path), GgufOptions(check=False))
    path = str(tmp_path / "model.gguf")
    checked = False
    kept = edgecc.load(path, keep_q4_1=True)
    assert kept.op_counts().get("edgecc.dequantize_offset") == 16
    assert kept.graph_module.meta["gguf"]["dequantized"] == {}
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    for node in kept.nodes("call_function"):
        if is_dequantize_offset(node):
            values = [kept.tensor(a).numpy() for a in node.args[:4]]
            packed, why = x86_wonly.plan(values, *node.args[4:7])
            assert packed is not None, why
            assert packed.scale.dtype == packed.offset.dtype == np.float16  # d, m: fp16
            assert packed.nbytes * 6 < 4 * packed.n * packed.k
            if "down_proj" in str(node.args[0].target) and "layers_1" in str(
                    node.args[0].target).replace(".", "_"):
                # the kernel's weights are the file's values, bit for bit
                assert np.array_equal(packed.dequantized(),
                                      gguf.quants.dequantize(t.data, t.tensor_type))
                checked = True
    assert checked
