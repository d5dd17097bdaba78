"""AMX tiles for the x86 int8 linears (``x86_amx_source``): the library carries
``tdpbusd`` / ``tdpbsud``; on a CPU and OS with AMX-INT8 the linears really run on the tiles
(the kernels' product count grows; a silent fall back to VNNI would fail here) and their
outputs are bit-identical to the AVX-512 VNNI kernels' on shapes with edge tiles (M, K, N
not multiples of 16 / 64 / 16) and to the integer arithmetic. Skipped where the CPU has no
AMX-INT8 or the OS does not grant the tile state."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest
import torch

import edgecc
from tests.targets.tvm.int8_cases import build_and_load, random_int8, random_requant


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(l for l in f if l.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return set()


def _amx() -> bool:
    """AMX-INT8 and AVX-512 VNNI in cpuid, and Linux grants this process the tile state
    (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), as the kernels ask it)."""
    if not {"amx_tile", "amx_int8", "avx512_vnni", "avx512bw"} <= _cpu_flags():
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(158, 0x1023, 18) == 0  # SYS_arch_prctl, ARCH_REQ_XCOMP_PERM
    except (OSError, AttributeError):
        return False


needs_amx = pytest.mark.skipif(not _amx(), reason="needs AMX-INT8 (CPU and OS)")
ENV = "EDGECC_X86_INT8_ISA"


def test_the_library_has_the_tile_products():
    """The compiled kernels hold the u8·s8 (linear) and s8·u8 (conv) tile products,
    whatever this CPU has: the artifact picks AMX at run time."""
    from edgecc.targets.tvm import x86_int8

    if shutil.which("objdump") is None:
        pytest.skip("needs objdump")
    text = subprocess.run(["objdump", "-d", x86_int8.compiled_object()], check=True,
                          capture_output=True, text=True).stdout
    assert "tdpbusd" in text and "tdpbsud" in text and "ldtilecfg" in text


def _requant(acc, e):
    v = (acc + e.off.reshape(1, -1)).astype(np.int32).astype(np.int64)
    y = (v * e.mult.reshape(1, -1) + e.add.reshape(1, -1)) >> e.shift.reshape(1, -1)
    return (np.clip(y, e.lo, e.hi) + e.zy).astype(np.int8)


@needs_amx
def test_linears_on_tiles_equal_vnni_on_edge_shapes(tmp_path, monkeypatch):
    """Requantized and float linears whose M, K, N leave partial tiles — K not a multiple of
    64 (the rows' padded copy, the last panel's zero-padded k step), M padded to 8 but not
    16 (a copy), M and N whole (the rows read in place) with a single last panel and 16-row
    block — bit-identical on AMX and on AVX-512 VNNI, and equal to the integer arithmetic;
    the tile product alone in both operand orders (a conv's ``tdpbsud`` too) equals numpy's."""
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_amx_source import AMX_COUNT, AMX_GEMM, AMX_QUERY

    rng = np.random.default_rng(0)
    shapes = [(7, 37, 40), (20, 128, 33), (47, 128, 35), (64, 200, 64), (50, 256, 17)]

    weights = [rng.integers(-128, 128, (n, k)).astype(np.int8) for _, k, n in shapes]
    eps = [random_requant(rng, n) for _, _, n in shapes]
    flt = x86_int8.Epilogue(off=eps[0].off, requant=False,
                            scale=rng.random(40).astype(np.float32),
                            bias=rng.random(40).astype(np.float32))
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType([m, k], "int8"))
              for i, (m, k, _) in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            outs = [x86_int8.emit_linear(bb, p, w, e) for p, w, e in zip(params, weights, eps)]
            outs.append(x86_int8.emit_linear(bb, params[0], weights[0], flt))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    ready = lib.get_function(AMX_QUERY, query_imports=True)
    count = lib.get_function(AMX_COUNT, query_imports=True)
    xs = [rng.integers(-128, 128, (m, k)).astype(np.int8) for m, k, _ in shapes]
    args = [tvm.runtime.tensor(x) for x in xs]

    monkeypatch.delenv(ENV, raising=False)
    assert ready() == 1
    before = count()
    amx = [o.numpy() for o in vm["main"](*args)]
    assert count() - before == len(outs)  # every product ran on the tiles
    monkeypatch.setenv(ENV, "amx")
    assert ready() == 1
    monkeypatch.setenv(ENV, "avx512vnni")
    assert ready() == 0
    before = count()
    vnni = [o.numpy() for o in vm["main"](*args)]
    assert count() == before  # the VNNI kernels, not the tiles
    for i, (a, b) in enumerate(zip(amx, vnni)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
    for (m, k, n), x, w, e, got in zip(shapes, xs, weights, eps, amx):
        acc = x.astype(np.int64) @ w.astype(np.int64).T
        np.testing.assert_array_equal(got, _requant(acc, e), err_msg=f"{(m, k, n)}")

    # the product alone, both operand orders: u8 rows x s8 panels (tdpbusd, a linear's) and
    # s8 rows x u8 panels (tdpbsud, a conv's: weights x im2col), exact int32 sums as float
    gemm = lib.get_function(AMX_GEMM, query_imports=True)
    monkeypatch.delenv(ENV)
    for urows in (True, False):
        for m, k, n in shapes + [(33, 300, 16), (16, 64, 47)]:
            a = rng.integers(0, 256, (m, k)) if urows else rng.integers(-128, 128, (m, k))
            b = rng.integers(-128, 128, (n, k)) if urows else rng.integers(0, 256, (n, k))
            out = tvm.runtime.tensor(np.full((m, n), np.nan, np.float32))
            gemm(tvm.runtime.tensor(x86_int8.pack_rows_dot(a.astype(np.uint8).view(np.int8))),
                 tvm.runtime.tensor(x86_int8.pack_panels_dot(b.astype(np.uint8).view(np.int8))),
                 tvm.runtime.tensor(np.array([urows, m, -(-k // 4), n], np.int64)), out)
            np.testing.assert_array_equal(out.numpy(), (a @ b.T).astype(np.float32),
                                          err_msg=f"urows={urows} {(m, k, n)}")


class _EncoderLayer(torch.nn.Module):
    """BERT's encoder layer: fused qkv projection, softmax attention, output projection,
    GELU FFN, post layer norms."""

    def __init__(self, d=64, heads=2, ffn=144):
        super().__init__()
        self.heads = heads
        self.qkv, self.o = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.f1, self.f2 = torch.nn.Linear(d, ffn), torch.nn.Linear(ffn, d)
        self.n1, self.n2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1) @ v
        x = self.n1(x + self.o(a.transpose(1, 2).reshape(b, t, d)))
        return self.n2(x + self.f2(torch.nn.functional.gelu(self.f1(x))))


@needs_amx
def test_a_bert_w8a8_build_runs_its_linears_on_tiles(tmp_path, monkeypatch):
    """A BERT encoder layer (hidden 64, FFN 144, 19 tokens: M = 19 rows and K = 144, both
    partial tiles) quantized w8a8 and lowered with the integer kernels: every linear runs on
    AMX, and the outputs on fresh inputs are bit-identical to the same library's AVX-512
    VNNI run."""
    import tvm

    from edgecc.targets.tvm import lowering, x86_int8
    from edgecc.targets.tvm.x86_amx_source import AMX_COUNT, AMX_QUERY

    torch.manual_seed(0)
    model = _EncoderLayer().eval()
    x = torch.randn(1, 19, 64)
    calib = [(torch.randn(1, 19, 64),) for _ in range(2)]
    program = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(model, (x,)), context=edgecc.PassContext(calibration=calib)).program
    report: dict = {}
    module = lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA, report=report)
    assert report["x86_kernels"] == report["integer_layers"] == 4, report
    path = str(tmp_path / "bert.so")
    lib, vm = build_and_load(module, path)
    ready = lib.get_function(AMX_QUERY, query_imports=True)
    count = lib.get_function(AMX_COUNT, query_imports=True)
    monkeypatch.delenv(ENV, raising=False)
    assert ready() == 1
    for seed in range(2):
        torch.manual_seed(seed + 1)
        fresh = tvm.runtime.tensor(torch.randn(1, 19, 64).numpy())
        before = count()
        amx = vm["main"](fresh)
        amx = (amx[0] if isinstance(amx, tvm.ir.Array) else amx).numpy()
        assert count() - before == 4  # each linear: one product on the tiles
        monkeypatch.setenv(ENV, "avx512vnni")
        vnni = vm["main"](fresh)
        vnni = (vnni[0] if isinstance(vnni, tvm.ir.Array) else vnni).numpy()
        monkeypatch.delenv(ENV)
        assert count() - before == 4
        np.testing.assert_array_equal(amx, vnni)


@needs_amx
def test_convolutions_on_tiles_equal_vnni(tmp_path, monkeypatch):
    """Convolutions on AMX (``tdpbsud``: s8 weight rows x u8 im2col panels, each task
    building the panels it multiplies): requantized, float and fused (relu6, residual,
    relu, int8 + float outputs) write-backs; 3x3 with zero-point padding (stride 1 and 2,
    dilation 2, batch 2) and 1x1 read in place; channel counts, K and pixel counts that
    leave partial tiles (OC 20 / 40, K 54 / 10 / 360; 99, 30, 64 and 256 pixels). Every
    convolution runs on the tiles (the conv count grows by one each: a silent fall back to
    VNNI fails) and the outputs are bit-identical to the AVX-512 VNNI kernels'."""
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_amx_source import AMX_CONV_COUNT

    rng = np.random.default_rng(3)

    def ints(*shape):
        return random_int8(rng, *shape)

    def requant(n):
        return random_requant(rng, n)

    def flt(n):
        return x86_int8.Epilogue(off=rng.integers(-3000, 3000, n).astype(np.int32),
                                 requant=False,
                                 scale=(rng.random(n) * 1e-3).astype(np.float32),
                                 bias=rng.standard_normal(n).astype(np.float32))

    x = ints(2, 6, 9, 11)
    x1 = ints(1, 40, 8, 8)
    w3, w1, wb = ints(20, 6, 3, 3), ints(40, 10, 1, 1), ints(40, 40, 3, 3)
    res = (rng.standard_normal((2, 20, 9, 11)) * 40).astype(np.float32)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(list(x.shape), "int8"))
    x1v = relax.Var("x1", relax.TensorType(list(x1.shape), "int8"))
    rv = relax.Var("r", relax.TensorType(list(res.shape), "float32"))
    with bb.function("main", [xv, x1v, rv]):
        with bb.dataflow():
            outs = [x86_int8.emit_conv(bb, xv, w3, 7, [1, 1], [1, 1], [1, 1], requant(20)),
                    x86_int8.emit_conv(bb, xv, w3, -5, [2, 2], [2, 2], [2, 2], flt(20)),
                    x86_int8.emit_conv(bb, x1v, wb, 3, [1, 1], [1, 1], [1, 1], requant(40))]
            outs += x86_int8.emit_conv(bb, xv, w3, 7, [1, 1], [1, 1], [1, 1], flt(20),
                                       x86_int8.Post(act="relu6", residual=rv, post_relu=True,
                                                     float_out=True,
                                                     quant=(0.37, -3.0, -128, 127)))
            xs = bb.emit(relax.op.reshape(x1v, [1, 10, 16, 16]))  # 1x1, in place
            outs.append(x86_int8.emit_conv(bb, xs, w1, 0, [1, 1], [0, 0], [1, 1], requant(40)))
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    count = lib.get_function(AMX_CONV_COUNT, query_imports=True)
    args = [tvm.runtime.tensor(a) for a in (x, x1, res)]
    monkeypatch.delenv(ENV, raising=False)
    before = count()
    vm["main"](*args)
    assert count() == before  # the default (2) takes none: no deep pointwise one here
    knob = ctypes.c_int64.in_dll(ctypes.CDLL(path), "edgecc_x86_int8_amx_conv")
    assert knob.value == 2
    knob.value = 1
    try:
        amx = [o.numpy() for o in vm["main"](*args)]
    finally:
        knob.value = 2
    assert count() - before == 3 * 2 + 2  # every convolution ran on the tiles (x: batch 2)
    monkeypatch.setenv(ENV, "avx512vnni")
    before = count()
    vnni = [o.numpy() for o in vm["main"](*args)]
    assert count() == before
    for i, (a, b) in enumerate(zip(amx, vnni)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
    assert len(np.unique(amx[0])) > 100 and len(np.unique(amx[4])) > 50  # not saturated


@needs_amx
def test_deep_pointwise_convolutions_take_the_tiles_by_default(tmp_path, monkeypatch):
    """``edgecc_x86_int8_amx_conv`` = 2 (the default): a 1x1 stride-1 convolution of 32+
    input channels (40 here: kq 10) on a map of 4+ panel pairs a pool thread (32x32: 32
    pairs) runs on the tiles — the count grows by one a call — bit-identical to AVX-512 VNNI;
    a shallow one (24 channels: kq 6), a deep one on few pairs (8x8: 2) and a 3x3 one stay
    on the VNNI paths; knob 0 sends the deep one back to VNNI."""
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_amx_source import AMX_CONV_COUNT

    rng = np.random.default_rng(5)
    x, xs, x8 = (random_int8(rng, *s) for s in ((1, 40, 32, 32), (1, 24, 32, 32),
                                                 (1, 40, 8, 8)))
    w, ws, w3 = (random_int8(rng, *s) for s in ((20, 40, 1, 1), (36, 24, 1, 1),
                                                 (16, 40, 3, 3)))
    bb = relax.BlockBuilder()
    vs = [relax.Var(n, relax.TensorType(list(a.shape), "int8"))
          for n, a in (("x", x), ("xs", xs), ("x8", x8))]
    one, zero = [1, 1], [0, 0]
    with bb.function("main", vs):
        with bb.dataflow():
            deep = [x86_int8.emit_conv(bb, vs[0], w, 3, one, zero, one,
                                       random_requant(rng, 20))]
            rest = [x86_int8.emit_conv(bb, vs[1], ws, -2, one, zero, one,
                                       random_requant(rng, 36)),
                    x86_int8.emit_conv(bb, vs[2], w, 3, one, zero, one,
                                       random_requant(rng, 20)),
                    x86_int8.emit_conv(bb, vs[0], w3, 1, one, one, one,
                                       random_requant(rng, 16))]
            out = bb.emit_output(relax.Tuple(deep + rest))
        bb.emit_func_output(out)
    module = bb.get().with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / "k.so")
    lib, vm = build_and_load(module, path)
    count = lib.get_function(AMX_CONV_COUNT, query_imports=True)
    args = [tvm.runtime.tensor(a) for a in (x, xs, x8)]
    monkeypatch.delenv(ENV, raising=False)
    knob = ctypes.c_int64.in_dll(ctypes.CDLL(path), "edgecc_x86_int8_amx_conv")
    assert knob.value == 2
    before = count()
    auto = [o.numpy() for o in vm["main"](*args)]
    assert count() == before + 1  # the deep pointwise one alone
    knob.value = 0
    try:
        vm["main"](*args)
        assert count() == before + 1
    finally:
        knob.value = 2
    monkeypatch.setenv(ENV, "avx512vnni")
    vnni = [o.numpy() for o in vm["main"](*args)]
    assert count() == before + 1
    for i, (a, b) in enumerate(zip(auto, vnni)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
    assert len(np.unique(auto[0])) > 50  # not saturated
