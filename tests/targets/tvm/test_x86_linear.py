"""``x86_linear``: the float linears with enough rows run on ``edgecc_x86_linear`` (packed rows,
GELU in the write-back) and give the SGEMM's outputs bit for bit, on the AVX-512 and the AVX2
paths; the path counters prove the linear kernel ran and the GELUs were fused (a silent
fallback to the SGEMM or to the separate GELU kernel fails); outputs agree with PyTorch."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgecc
from edgecc.targets.tvm import lowering, x86_attention, x86_fp32, x86_linear

pytestmark = pytest.mark.skipif(not x86_attention.supported(lowering.llvm_target(None, None)),
                                reason="needs an x86 CPU with AVX2 + FMA")

# 2 x 61 = 122 rows: >= min_rows (96), not a multiple of 12 or 6 (a short last row block);
# N = 80 (5 panels: two pairs and a single) and 40 (a masked last vector)
B, S, D, FF, FT = 2, 61, 48, 80, 40
GROUP_BYTES = 256 * 1024  # edgecc_x86_linear_group_bytes's default


class Mlp(nn.Module):
    """A BERT FFN (erf GELU, the residual add after the second linear) and a GPT-2 FFN (GELU
    written out with tanh and a cube), then a small linear (too few rows: stays on the
    SGEMM) on the first token."""

    def __init__(self):
        super().__init__()
        self.f1, self.f2 = nn.Linear(D, FF), nn.Linear(FF, D)
        self.g1, self.g2 = nn.Linear(D, FT), nn.Linear(FT, D)
        self.head = nn.Linear(D, 8)

    def forward(self, x):
        h = x + self.f2(F.gelu(self.f1(x)))
        u = self.g1(h)
        u = 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                        * (u + 0.044715 * torch.pow(u, 3.0))))
        h = h + self.g2(u)
        return h, self.head(h[:, 0])


def _inputs(seed):
    torch.manual_seed(seed)
    return (torch.randn(B, S, D),)


def _pool_threads(res) -> int:
    """The kernels' pool size in this process (the runner's ``edgecc_pool_threads``)."""
    import ctypes

    return ctypes.c_int32.in_dll(ctypes.CDLL(res._runner.library), "edgecc_pool_threads").value


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The default build and one with the linears left on the SGEMM (``x86_linear.apply``
    replaced by the identity), 2 threads asked: the linear kernel then splits the columns
    too (11 row blocks < ``edgecc_x86_linear_min_items``), so the default path is the split
    one — when this process's pool has 2 threads (sized at its first use)."""
    torch.manual_seed(0)
    model = Mlp().eval()
    out = {}
    for name in ("linear", "sgemm"):
        mp = pytest.MonkeyPatch()
        if name == "sgemm":
            mp.setattr(x86_linear, "apply",
                       lambda module, library=True, options=None:
                       (module, x86_linear.RewriteStats()))
        try:
            res = edgecc.compile(model, "host", example_inputs=_inputs(0), pipeline="",
                                 target_options={"num_threads": 2},  # the column splits
                                 output_dir=str(tmp_path_factory.mktemp(name)))
        finally:
            mp.undo()
        assert res.report["verification"]["passed"]
        out[name] = res
    return model, out


def test_rewrite_counts_and_ir(builds):
    """Four linears retargeted (the head's 2 rows stay on the SGEMM), both GELUs fused: no
    ``edgecc_x86_gelu`` call is left in the module, none of the fused linears' SGEMM."""
    model, built = builds
    report = built["linear"].report["lowering"]["x86_attention"]
    assert (report["x86_linear"], report["linear_gelu_fused"]) == (4, 2), report
    assert built["sgemm"].report["lowering"]["x86_attention"]["x86_linear"] == 0
    target = lowering.llvm_target(None, None)
    module = lowering.to_relax(built["linear"].program)
    module, _ = x86_attention.apply(x86_fp32.apply(module, target)[0], target)
    text = module["main"].script(show_meta=False)
    assert text.count('"edgecc_x86_linear"') == 4
    assert text.count('"edgecc_x86_sgemm"') == 1  # the head
    assert '"edgecc_x86_gelu"' not in text


def test_min_rows_option(builds):
    """``LinearOptions.min_rows`` decides which SGEMM calls move (and ``fuse_gelu=False``
    keeps the GELU kernel)."""
    _, built = builds
    target = lowering.llvm_target(None, None)
    module = lowering.to_relax(built["linear"].program)
    module = x86_attention.rewrite(x86_fp32.apply(module, target)[0])[0]
    _, every = x86_linear.rewrite(module, x86_linear.LinearOptions(min_rows=1), library=False)
    assert (every.linears, every.gelu_fused) == (5, 2)
    _, none = x86_linear.rewrite(module, x86_linear.LinearOptions(min_rows=10 ** 6))
    assert none.linears == 0
    _, unfused = x86_linear.rewrite(module, x86_linear.LinearOptions(fuse_gelu=False),
                                    library=False)
    assert (unfused.linears, unfused.gelu_fused) == (4, 0)


@pytest.mark.parametrize("isa", ["native", "avx2"])
def test_outputs_equal_sgemm_bit_for_bit(builds, monkeypatch, isa):
    """The linear kernel's outputs are the SGEMM + GELU kernel's, bit for bit (the same sums
    in the same order, the same GELU expression), on fresh inputs; within 1e-5 of PyTorch.
    The path counters: 4 linear calls, 2 fused GELUs and 4 column splits per run (a fallback
    fails)."""
    model, built = builds
    ours = built["linear"]
    ours.run(*_inputs(1))  # loads the library
    paths = ours._runner.module.get_function(x86_attention.PATH_QUERY, query_imports=True)
    if isa == "avx2":  # read at each call: the AVX2 path of the same library
        monkeypatch.setenv("EDGECC_X86_ATTN_NO_AVX512", "1")
    for seed in (1, 2):
        inputs = _inputs(seed)
        before = [int(paths(i)) for i in (3, 4, 5)]
        got = ours.run(*inputs)
        # 4 linears, 2 GELUs fused, 4 calls splitting their columns (11 row blocks) when the
        # pool has 2+ threads (TVM's pool is sized once per process: a suite run may give 1)
        splits = 4 if _pool_threads(ours) > 1 else 0
        assert [int(paths(i)) - b for i, b in zip((3, 4, 5), before)] == [4, 2, splits]
        ref = built["sgemm"].run(*inputs)
        with torch.no_grad():
            expect = model(*inputs)
        for g, r, e in zip(got, ref, expect):
            g, r, e = np.asarray(g), np.asarray(r), e.numpy()
            if isa == "native":  # the SGEMM's library runs its AVX-512 kernel here
                assert np.array_equal(g, r)
            else:  # the same sums with 8-lane vectors: equal too, checked to 1 ulp-ish
                assert np.abs(g - r).max() <= 1e-6 * np.abs(r).max()
            assert np.abs(g - e).max() <= 1e-5 * np.abs(e).max()


@pytest.mark.parametrize("isa", ["native", "avx2"])
def test_panel_chunks_and_column_splits_are_the_same_sums(builds, monkeypatch, isa):
    """``edgecc_x86_linear_panel_bytes`` (the panels a task multiplies by all its rows before
    the next chunk; 0: all at once; 1: one tile's columns), ``edgecc_x86_linear_min_items``
    (columns split until there are this many pool items; 0: rows only; 2^20: every split the
    columns allow, here 2 per linear) and ``edgecc_x86_linear_group_bytes`` (row blocks packed
    and multiplied in groups of this many bytes; 0: all of a task's at once; 1: one block per
    group) change which tiles a task runs and in what order, not their sums: the outputs are
    equal bit for bit; so do ``edgecc_x86_linear_prefetch`` (2: each tile prefetches its
    output lines as it starts; 3: one every 4 k steps; 1, the default: 3 in a call with a
    residual, 2 otherwise; 0 not) and ``edgecc_x86_linear_panel_prefetch`` (default 8:
    each k step prefetches its panels' line 8 steps ahead; 0 not; 1; 100 > K: every step in
    the loop without prefetches). Path 6 counts the runs that packed in 2+ groups, path 8 the
    calls that prefetched their outputs, path 10 those that prefetched panels, path 11 those
    that spread their output prefetches (a knob the kernel ignored fails)."""
    import ctypes

    _, built = builds
    ours = built["linear"]
    if isa == "avx2":
        monkeypatch.setenv("EDGECC_X86_ATTN_NO_AVX512", "1")
    inputs = _inputs(3)
    lib = ctypes.CDLL(ours._runner.library)
    chunk = ctypes.c_int64.in_dll(lib, "edgecc_x86_linear_panel_bytes")
    items = ctypes.c_int64.in_dll(lib, "edgecc_x86_linear_min_items")
    group = ctypes.c_int64.in_dll(lib, "edgecc_x86_linear_group_bytes")
    prefetch = ctypes.c_int64.in_dll(lib, "edgecc_x86_linear_prefetch")
    panel_pf = ctypes.c_int64.in_dll(lib, "edgecc_x86_linear_panel_prefetch")
    defaults = chunk.value, items.value, group.value
    assert defaults == (256 * 1024, 32, GROUP_BYTES)
    assert prefetch.value == 1 and panel_pf.value == 8
    splits = 4 if _pool_threads(ours) > 1 else 0  # one thread never splits
    try:
        group.value = 0
        ref = ours.run(*inputs)
        paths = ours._runner.module.get_function(x86_attention.PATH_QUERY, query_imports=True)
        sites = ((0, 32, 0), (1, 32, 0), (1 << 30, 32, 0), (256 * 1024, 0, 0),
                 (256 * 1024, 1 << 20, 0), (1, 1 << 20, 0), (256 * 1024, 32, 1),
                 (256 * 1024, 0, 1), (1, 1 << 20, 6000), (0, 0, 6000),
                 (256 * 1024, 32, 1 << 30))
        for ((c, i, gb), pf), ppf in zip(itertools.product(sites, (0, 1, 2, 3)),
                                         itertools.cycle((8, 0, 1, 100, 8))):
            chunk.value, items.value, group.value, prefetch.value = c, i, gb, pf
            panel_pf.value = ppf
            split, grouped, prefetched = int(paths(5)), int(paths(6)), int(paths(8))
            panels, spread = int(paths(10)), int(paths(11))
            got = ours.run(*inputs)
            # 4 linears a run, 2 with a residual
            assert int(paths(8)) - prefetched == (4 if pf else 0), (c, i, gb, pf)
            assert int(paths(11)) - spread == {0: 0, 1: 2, 2: 0, 3: 4}[pf], (c, i, gb, pf)
            assert int(paths(10)) - panels == (4 if ppf else 0), (c, i, gb, ppf)
            assert int(paths(5)) - split == (0 if i == 0 else splits), (c, i, gb)
            # a 12-row block of K = 48 or 80 packs 2304 / 3840 bytes: 1 and 6000 bytes make
            # every task of 2+ blocks use groups; 0 and 2^30 none
            assert (int(paths(6)) > grouped) == (gb in (1, 6000)), (c, i, gb)
            for g, r in zip(got, ref):
                assert np.array_equal(np.asarray(g), np.asarray(r)), (c, i, gb, pf, ppf)
    finally:
        chunk.value, items.value, group.value = defaults
        prefetch.value, panel_pf.value = 1, 8
