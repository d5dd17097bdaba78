import torch
import torch.nn as nn

import edgecc
from edgecc.targets.tvm import lowering
from edgecc.targets.tvm.schedule import default_cpu_schedule


def test_default_schedule_parallelizes_kernels_and_keeps_results(tmp_path):
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8 * 64, 10)).eval()
    program = edgecc.trace(m, (torch.randn(2, 3, 8, 8),))
    module = lowering.to_relax(program)
    target = lowering.llvm_target(None, None)
    with target:
        legal = tvm.transform.Sequential(cpu.library_dispatch_passes(target) +
                                         cpu.legalize_passes(target))(module)
        scheduled = default_cpu_schedule()(legal)
    text = scheduled.script()
    assert "T.parallel" in text
    prim = [f for _, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert prim and all("tir.is_scheduled" in f.attrs for f in prim)
    # the conv and the matmul reductions got the schedule (their init is decomposed), not
    # left as TVM built them because a schedule step raised
    inits = [f.attrs["global_symbol"] for f in prim if "_init" in f.script()]
    assert len(inits) >= 2, inits

    x = torch.randn(2, 3, 8, 8)
    outs = {}
    for schedule in ("edgecc", "tvm"):
        res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                             target_options={"schedule": schedule},
                             output_dir=str(tmp_path / schedule))
        assert res.report["verification"]["passed"]
        outs[schedule] = res.run(x)
    torch.testing.assert_close(outs["edgecc"], outs["tvm"], atol=1e-5, rtol=1e-5)


class _ConvZoo(nn.Module):
    """Every convolution / matmul form the register tile handles: 3x3 stride 1 and 2,
    depthwise, grouped, pointwise on a small map (rows x columns fused), odd widths."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.gc = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.pw = nn.Conv2d(12, 20, 1)
        self.odd = nn.Conv2d(20, 6, 3, padding=0)  # 2 outputs per row: no vector tile
        self.fc = nn.Linear(6 * 2 * 2, 16)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.clamp(self.dw(x), 0, 6) + self.gc(x)
        x = self.pw(torch.nn.functional.max_pool2d(x, 2))
        return torch.nn.functional.gelu(self.fc(self.odd(x).flatten(1)))


def test_register_tile_applies_and_matches_pytorch(tmp_path):
    """The tiled kernels (annotated by the schedule) compute what PyTorch does, and the
    conv / depthwise / pointwise / matmul kernels of the zoo all got the tile."""
    import tvm

    from edgecc.targets.tvm.pipeline import kernel_passes
    from edgecc.targets.tvm.schedule import TILED

    torch.manual_seed(0)
    m = _ConvZoo().eval()
    x = torch.randn(2, 3, 16, 16)
    program = edgecc.trace(m, (x,))
    target = lowering.llvm_target(None, None)
    with target:
        legal = tvm.transform.Sequential(kernel_passes(target))(lowering.to_relax(program))
        scheduled = default_cpu_schedule()(legal)
    tiled = sorted(gv.name_hint for gv, f in scheduled.functions.items()
                   if isinstance(f, tvm.tirx.PrimFunc) and TILED in f.script())
    # c1, c2, dw (+ the add of gc), gc, pw, fc; odd is not (2 outputs per row)
    assert len(tiled) >= 5, tiled
    assert any("matmul" in n for n in tiled) and sum("conv2d" in n for n in tiled) >= 4, tiled
    # each tiled kernel of PARALLEL_WORK multiply-adds or more keeps its parallel outer loop
    # (c1, c2, gc; the smaller dw, pw and fc run serially); only tile loops (<= 16) are
    # unrolled (counting the write-back's loops from the end once unrolled a 3072-long outer
    # loop of a batched attention matmul: LLVM then took minutes on one kernel)
    parallel = [n for n in tiled if "T.parallel" in scheduled[n].script()]
    assert len(parallel) >= 3 and not any("matmul" in n for n in parallel), parallel
    for name in tiled:
        text = scheduled[name].script()
        assert not any(f"T.unroll(T.int64({n}))" in text for n in (32, 64, 128, 256)), name

    res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                         output_dir=str(tmp_path / "o"))
    for seed in range(3):  # fresh inputs, not the ones the compile verified
        torch.manual_seed(100 + seed)
        fresh = torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(res.run(fresh), m(fresh), atol=1e-4, rtol=1e-4)


def test_batched_matmul_tile_keeps_the_parallel_loop():
    """A 4-D (attention-like) matmul: its write-back has fewer loops than the tile has axes
    (unit tiles vanish); the tile loops are found from the tile's anchor loop."""
    import tvm

    from edgecc.targets.tvm.pipeline import kernel_passes
    from edgecc.targets.tvm.schedule import TILED

    class Scores(nn.Module):
        def forward(self, q, k):
            return torch.relu(torch.matmul(q, k.transpose(-1, -2)))

    q, k = torch.randn(16, 12, 64, 32), torch.randn(16, 12, 64, 32)
    program = edgecc.trace(Scores().eval(), (q, k))
    target = lowering.llvm_target(None, None)
    with target:
        legal = tvm.transform.Sequential(kernel_passes(target))(lowering.to_relax(program))
        scheduled = default_cpu_schedule()(legal)
    texts = [f.script() for _, f in scheduled.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc) and TILED in f.script()]
    assert len(texts) == 1
    assert "T.parallel" in texts[0] and "T.unroll(T.int64(3072))" not in texts[0]


def test_strided_pointwise_conv_is_not_fused_into_a_matmul(tmp_path):
    """Regression (issue 21, ResNet's downsample): a 1x1 stride-2 convolution on a small map
    took the pointwise rows x columns tile and miscompiled (24x24 input: max-abs 3.5);
    strided pointwise convolutions keep the NCHW tile and match PyTorch."""
    torch.manual_seed(0)
    for size in (24, 20, 12):
        m = nn.Conv2d(16, 32, 1, stride=2, bias=False).eval()
        x = torch.randn(1, 16, size, size)
        res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                             output_dir=str(tmp_path / str(size)))
        fresh = torch.randn(1, 16, size, size)
        torch.testing.assert_close(res.run(fresh), m(fresh), atol=1e-4, rtol=1e-4)


def test_small_reductions_run_serially_and_large_ones_in_parallel():
    """A CNN's global average pool and classifier (under PARALLEL_WORK multiply-adds) get no
    parallel loop — each woke TVM's pool on every inference, whose worker then spun beside
    the hand-written kernels' pool; a reduction over a large map and a big product keep it."""
    import tvm

    from edgecc.targets.tvm.pipeline import kernel_passes
    from edgecc.targets.tvm.schedule import PARALLEL_WORK

    class Head(nn.Module):
        def __init__(self, channels, classes):
            super().__init__()
            self.fc = nn.Linear(channels, classes)

        def forward(self, x):
            return self.fc(x.mean((2, 3)))

    target = lowering.llvm_target(None, None)
    for shape, classes, parallel in (((1, 64, 8, 8), 10, False), ((1, 64, 64, 64), 512, True)):
        assert (shape[1] * shape[2] * shape[3] >= PARALLEL_WORK) == parallel
        program = edgecc.trace(Head(shape[1], classes).eval(), (torch.randn(*shape),))
        with target:
            legal = tvm.transform.Sequential(kernel_passes(target))(lowering.to_relax(program))
            scheduled = default_cpu_schedule()(legal)
        texts = {str(g.name_hint): f.script() for g, f in scheduled.functions.items()
                 if isinstance(f, tvm.tirx.PrimFunc)}
        reductions = [t for t in texts.values() if "_init" in t]
        assert len(reductions) == 2, list(texts)  # the mean and the matmul, both scheduled
        assert all(("T.parallel" in t) == parallel for t in reductions), list(texts)


def test_linear_tile_is_8_rows_and_32_columns_on_4k_weight_rows():
    """A float linear's tile: 8 rows x 16 columns, 8 x 32 when a weight row is 4 KiB (1024
    floats: every k's strip in one L1 set); both compute x @ W + b (float32, same order)."""
    import numpy as np
    import tvm
    from tvm import te

    from edgecc.targets.tvm.schedule import schedule_kernel

    rng = np.random.default_rng(0)
    for n, width in ((1024, 32), (768, 16)):
        x = te.placeholder((1, 64, 96), name="x")
        w = te.placeholder((96, n), name="w")
        b = te.placeholder((n,), name="b")
        k = te.reduce_axis((0, 96), "k")
        mm = te.compute((1, 64, n), lambda i, j, c: te.sum(x[i, j, k] * w[k, c], axis=k),
                        name="matmul")
        out = te.compute((1, 64, n), lambda i, j, c: mm[i, j, c] + b[c], name="T_add")
        sch = schedule_kernel(te.create_prim_func([x, w, b, out]))
        text = sch.mod.script()
        assert f"T.vectorized({width})" in text and "T.unroll(8)" in text, (n, text)
        lib = tvm.compile(sch.mod, target=lowering.llvm_target(None, None))
        xs, ws, bs = (rng.standard_normal(s).astype(np.float32)
                      for s in ((1, 64, 96), (96, n), (n,)))
        got = tvm.runtime.tensor(np.empty((1, 64, n), np.float32))
        lib["main"](*(tvm.runtime.tensor(a) for a in (xs, ws, bs)), got)
        ref = xs.astype(np.float64) @ ws.astype(np.float64) + bs
        assert np.abs(got.numpy() - ref).max() <= 1e-4 * np.abs(ref).max()
