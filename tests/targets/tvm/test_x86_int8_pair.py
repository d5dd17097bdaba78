"""``x86_int8_pair``: a stride-2 block's 3x3 conv1 and its 1x1 stride-2 shortcut as one
``edgecc_x86_qconv_pair`` call equal their two calls bit for bit (and the integer / float32
arithmetic), and the paired path runs (its counter grows; ``edgecc_x86_int8_pair`` 0 gives the
same outputs by the two calls in turn) — kernel level on random cases, serial and pooled, and a
whole w8a8 ResNet against the build in the old lowering order and the unpaired one."""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.targets.tvm.int8_cases import (pooled_library, random_int8, random_requant, w8a8_program,
                                          runs_knob_on_and_off)
from tests.targets.tvm.test_x86_int8 import _avx2, _conv_ref, _cpu_flags, _requant

_EXAMPLES = itertools.count()
pytestmark = pytest.mark.skipif(not _avx2(), reason="the x86 int8 kernels need AVX2")


def _pairs_here() -> bool:
    """This CPU takes conv_direct4's stride-2 path (AVX-512 VNNI + VBMI): the pair runs;
    AMX CPUs too (their convolutions on the tiles are opt-in)."""
    return {"avx512_vnni", "avx512vbmi", "avx512bw"} <= _cpu_flags()


def _float_epilogue(rng, n):
    from edgecc.targets.tvm import x86_int8

    return x86_int8.Epilogue(off=rng.integers(-3000, 3000, n).astype(np.int32), requant=False,
                             scale=(rng.random(n) * 1e-3).astype(np.float32),
                             bias=rng.standard_normal(n).astype(np.float32))


def _cases(rng, shapes):
    """Per (C, H, W, conv1 channels, shortcut channels): x, zx, conv1's weights and requant
    epilogue, the shortcut's weights and float epilogue."""
    out = []
    for c, h, w, p1, p2 in shapes:
        out.append((random_int8(rng, 1, c, h, w), int(rng.integers(-20, 21)),
                    random_int8(rng, p1, c, 3, 3), random_requant(rng, p1),
                    random_int8(rng, p2, c, 1, 1), _float_epilogue(rng, p2)))
    return out


def _library(tmp_path, cases, name):
    """One library with each case's two calls, then the same two paired: outputs per case
    (conv1, shortcut, paired conv1, paired shortcut); (VM, CDLL, pair counter)."""
    from tvm import relax

    from edgecc.targets.tvm import x86_int8, x86_int8_pair

    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(list(c[0].shape), "int8"))
              for i, c in enumerate(cases)]
    flat = []
    with bb.function("main", params):
        with bb.dataflow():
            for p, (_, zx, w1, e1, w2, e2) in zip(params, cases):
                two = []
                for _ in range(2):
                    two += [x86_int8.emit_conv(bb, p, w1, zx, [2, 2], [1, 1], [1, 1], e1),
                            x86_int8.emit_conv(bb, p, w2, zx, [2, 2], [0, 0], [1, 1], e2)]
                pair = x86_int8_pair.fuse(bb, two[2], two[3])
                assert pair is not None
                flat += [*two[:2], *pair]
            out = bb.emit_output(relax.Tuple(flat))
        bb.emit_func_output(out)
    module = relax.transform.DeadCodeElimination()(bb.get())
    text = module.script()
    assert text.count(f'"{x86_int8_pair.SYMBOL}"') == len(cases)
    assert text.count('"edgecc_x86_qconv"') == 2 * len(cases)  # the unpaired ones only
    module = module.with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / name)
    lib, vm, so = pooled_library(module, path)
    return vm, so, lib.get_function(x86_int8_pair.CALLS, query_imports=True)


def _check(cases, runs, reference=True):
    for run in runs:
        for i, (x, zx, w1, e1, w2, e2) in enumerate(cases):
            y1, ys, p1, ps = run[4 * i:4 * i + 4]
            np.testing.assert_array_equal(p1, y1)
            np.testing.assert_array_equal(ps, ys)
            if not reference:
                continue
            acc1 = _conv_ref(x, w1, zx, [2, 2], [1, 1], [1, 1], 1)
            np.testing.assert_array_equal(y1, _requant(acc1, e1.off, e1.mult, e1.add, e1.shift,
                                                       e1.lo, e1.hi, e1.zy, 1))
            acc2 = _conv_ref(x, w2, zx, [2, 2], [0, 0], [1, 1], 1)
            v = (acc2 + e2.off.reshape(1, -1, 1, 1)).astype(np.int32).astype(np.float32)
            ref = v * e2.scale.reshape(1, -1, 1, 1) + e2.bias.reshape(1, -1, 1, 1)
            np.testing.assert_array_equal(ys, ref)  # float32 ops, no fma: exact
            assert len(np.unique(y1)) > 10  # not saturated


def test_paired_calls_equal_their_two_calls(tmp_path):
    """ResNet-20's two stride-2 blocks (16->32 @32x32, 32->64 @16x16: 16- and 8-column
    outputs) and odd ones (4 / 12 channels, odd maps, channels not a multiple of 8, 10 output
    rows): paired equals the two calls and the integer / float32 arithmetic, serial and pooled,
    with the knob on (counted once a case a run) and off (not counted)."""
    import tvm

    rng = np.random.default_rng(5)
    shapes = [(16, 32, 32, 32, 32), (32, 16, 16, 64, 64), (4, 31, 31, 8, 12),
              (12, 15, 15, 20, 9), (8, 20, 32, 16, 16), (8, 48, 32, 8, 24)]
    cases = _cases(rng, shapes)
    vm, so, counter = _library(tmp_path, cases, "p.so")
    args = [tvm.runtime.tensor(c[0]) for c in cases]
    runs = runs_knob_on_and_off(so, vm, args, "edgecc_x86_int8_pair", counter,
                                len(cases) if _pairs_here() else 0)
    # per-call tables (no layer table: conv1's would be in the call's scratch): not paired,
    # the two calls in turn
    tables = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_layer_tables")
    tables.value, before = 0, counter()
    try:
        runs.append([o.numpy() for o in vm["main"](*args)])
    finally:
        tables.value = 1
    assert counter() == before
    _check(cases, runs)


@settings(max_examples=settings.default.max_examples, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 16).map(lambda q: 4 * q), st.integers(1, 40),
                          st.sampled_from([15, 16, 31, 32]), st.integers(1, 40),
                          st.integers(1, 40)), min_size=1, max_size=4),
       st.integers(0, 2 ** 32 - 1))
def test_random_paired_calls_equal_their_two_calls(tmp_path, shapes, seed):
    import tvm

    # 8-column outputs (w 15 / 16) need an even number of output rows to pair
    shapes = [(c, h + 2 * (w <= 16 and ((h - 1) // 2 + 1) % 2), w, p1, p2)
              for c, h, w, p1, p2 in shapes]
    cases = _cases(np.random.default_rng(seed), shapes)
    vm, so, counter = _library(tmp_path, cases, f"r{next(_EXAMPLES)}.so")
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    try:
        for pool in (63, -62):  # serial, then every job pooled
            shift.value = pool
            before = counter()
            runs = [[o.numpy() for o in vm["main"](*[tvm.runtime.tensor(c[0]) for c in cases])]]
            assert counter() - before == (len(cases) if _pairs_here() else 0)
            _check(cases, runs, reference=False)
    finally:
        shift.value = 0


def test_fuse_leaves_other_calls_alone():
    """Not a pair: a stride-1 conv1, a padded shortcut, another input, a 3x3 shortcut, or
    ``FUSE_PAIR`` off."""
    from tvm import relax

    from edgecc.targets.tvm import x86_int8, x86_int8_pair

    rng = np.random.default_rng(3)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 16, 16], "int8"))
    x2 = relax.Var("x2", relax.TensorType([1, 8, 16, 16], "int8"))
    e1, e2 = random_requant(rng, 16), _float_epilogue(rng, 16)
    w1, w2 = random_int8(rng, 16, 8, 3, 3), random_int8(rng, 16, 8, 1, 1)
    with bb.function("main", [x, x2]):
        with bb.dataflow():
            c1 = x86_int8.emit_conv(bb, x, w1, 0, [2, 2], [1, 1], [1, 1], e1)
            s1 = x86_int8.emit_conv(bb, x, w1, 0, [1, 1], [1, 1], [1, 1], e1)
            sc = x86_int8.emit_conv(bb, x, w2, 0, [2, 2], [0, 0], [1, 1], e2)
            padded = x86_int8.emit_conv(bb, x, w2, 0, [2, 2], [1, 1], [1, 1], e2)
            other = x86_int8.emit_conv(bb, x2, w2, 0, [2, 2], [0, 0], [1, 1], e2)
            assert x86_int8_pair.fuse(bb, s1, sc) is None
            assert x86_int8_pair.fuse(bb, c1, padded) is None
            assert x86_int8_pair.fuse(bb, c1, other) is None
            assert x86_int8_pair.fuse(bb, c1, c1) is None
            try:
                x86_int8_pair.FUSE_PAIR = False
                assert x86_int8_pair.fuse(bb, c1, sc) is None
            finally:
                x86_int8_pair.FUSE_PAIR = True
            assert x86_int8_pair.fuse(bb, c1, sc) is not None
            out = bb.emit_output(c1)
        bb.emit_func_output(out)


class _Reversed(torch.nn.Module):
    """ResNet-like stages whose stride-2 blocks add ``shortcut(x) + conv2(y)`` (the shortcut
    first in the graph's add), the second stage's shortcut without a bias."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.c1 = nn.ModuleList([nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(16, 24, 3, 2, 1)])
        self.c2 = nn.ModuleList([nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(24, 24, 3, 1, 1)])
        self.sc = nn.ModuleList([nn.Conv2d(8, 16, 1, 2), nn.Conv2d(16, 24, 1, 2, bias=False)])
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for c1, c2, sc in zip(self.c1, self.c2, self.sc):
            x = torch.relu(sc(x) + c2(torch.relu(c1(x))))
        return self.fc(x.mean((2, 3)))


def _resnet():
    from examples.models import ResNet, calibrate_bn

    return calibrate_bn(ResNet(blocks_per_stage=1), (8, 3, 32, 32), seed=0).eval()


@pytest.mark.parametrize("make,residuals,early", [(_resnet, 3, 2),
                                                  (lambda: _Reversed().eval(), 2, 0)])
def test_w8a8_resnet_paired_equals_the_old_order_and_the_simulator(tmp_path, monkeypatch,
                                                                   make, residuals, early):
    """A ResNet (one block a stage; and stride-2 blocks adding the shortcut first), w8a8, x86
    int8 kernels: its two stride-2 blocks' shortcuts lowered after conv1 (conv2 taking the
    residual add) give the old order's outputs bit for bit, paired too; the report counts
    them; the paired call runs twice a run; and the output is within one step of the head's
    input of the simulator's."""
    import tvm
    import tvm.relax

    from edgecc.quant import is_quantize
    from edgecc.targets.tvm import lowering, x86_int8, x86_int8_pair

    torch.manual_seed(0)
    model = make()
    program, x = w8a8_program(model)
    outs, counts = {}, {}
    for reorder, pair in ((False, False), (True, False), (True, True)):
        monkeypatch.setattr(x86_int8_pair, "REORDER", reorder)
        monkeypatch.setattr(x86_int8_pair, "FUSE_PAIR", pair)
        report: dict = {}
        module = lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA,
                                   report=report)
        main = module.script().split("def main")[1]
        path = str(tmp_path / f"m{reorder}{pair}.so")
        lowering.build(module, lowering.llvm_target(None, 2), path)
        lib = tvm.runtime.load_module(path)
        vm = tvm.relax.VirtualMachine(lib, tvm.cpu())
        counter = lib.get_function(x86_int8_pair.CALLS, query_imports=True)
        before = counter()
        got = vm["main"](tvm.runtime.tensor(x.numpy()))
        ran = counter() - before
        outs[(reorder, pair)] = (got[0] if not hasattr(got, "numpy") else got).numpy()
        counts[(reorder, pair)] = (report.get("x86_early", 0), report.get("x86_pairs", 0),
                                   main.count(f'"{x86_int8_pair.SYMBOL}"'), ran,
                                   report["fused_residual"])
    paired = 2 if _pairs_here() else 0
    # (the reversed add: each shortcut is lowered at its own turn, before its conv1, and
    # paired with it there: none early)
    assert counts == {(False, False): (0, 0, 0, 0, residuals),
                      (True, False): (early, 0, 0, 0, residuals),
                      (True, True): (early, 2, 2, paired, residuals)}, counts
    np.testing.assert_array_equal(outs[(True, False)], outs[(False, False)])
    np.testing.assert_array_equal(outs[(True, True)], outs[(False, False)])
    q = [n for n in program.nodes("call_function") if is_quantize(n)][-1]
    step = float(program.tensor(q.args[1]).max())
    bound = step * model.fc.weight.detach().abs().sum(dim=1).max().item() + 1e-5
    assert np.abs(outs[(True, True)] - program.run(x)[0].numpy()).max() <= bound
