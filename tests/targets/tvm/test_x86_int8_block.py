"""``x86_int8_block``: an int8 inverted residual block (expand 1x1, depthwise 3x3, project 1x1
(+ residual)) as one ``edgecc_x86_qblock`` call equals its three calls bit for bit (and the
integer arithmetic), and the fused call runs (its counter grows) — kernel level on random
blocks, and a whole w8a8 model against the unfused build."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgecc
from tests.targets.tvm.int8_cases import build_and_load, random_int8, random_requant
from tests.targets.tvm.test_x86_int8 import _avx2, _conv_ref, _requant

_EXAMPLES = itertools.count()
pytestmark = pytest.mark.skipif(not _avx2(), reason="the x86 int8 kernels need AVX2")


def _float_epilogue(rng, n):
    from edgecc.targets.tvm import x86_int8

    return x86_int8.Epilogue(off=rng.integers(-3000, 3000, n).astype(np.int32), requant=False,
                             scale=(rng.random(n) * 1e-3).astype(np.float32),
                             bias=rng.standard_normal(n).astype(np.float32))


def _block(bb, x, case, fused):
    """The three calls of ``case`` on ``x`` (with ``fused``: then ``x86_int8_block.fuse``),
    -> (outputs, whether fuse took them)."""
    from edgecc.targets.tvm import x86_int8, x86_int8_block

    we, wd, wp, ee, ed, ep, stride, res, quant = case
    y = x86_int8.emit_conv(bb, x, we, 3, [1, 1], [0, 0], [1, 1], ee)
    y = x86_int8.emit_depthwise(bb, y, wd, -5, [stride] * 2, [1, 1], [1, 1], ed)
    if res is None:
        outs = [x86_int8.emit_conv(bb, y, wp, 2, [1, 1], [0, 0], [1, 1], ep)]
    else:
        outs = x86_int8.emit_conv(bb, y, wp, 2, [1, 1], [0, 0], [1, 1], ep, x86_int8.Post(
            residual=res, float_out=True, quant=quant))
    new = x86_int8_block.fuse(bb, outs) if fused else None
    return (new if new is not None else outs), new is not None


def _cases(rng, shapes):
    """Random operands per (N, C, E, P, H, W, stride, residual) shape."""
    cases, xs = [], []
    for nb, c, e, p, h, w, stride, residual in shapes:
        xs.append(random_int8(rng, nb, c, h, w))
        oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
        res = (rng.standard_normal((nb, p, oh, ow)) * 40).astype(np.float32) if residual \
            else None
        ep = _float_epilogue(rng, p) if residual else random_requant(rng, p)
        cases.append((random_int8(rng, e, c, 1, 1), random_int8(rng, e, 1, 3, 3),
                      random_int8(rng, p, e, 1, 1), random_requant(rng, e),
                      random_requant(rng, e), ep, stride, res, (0.37, -3.0, -128, 127)))
    return xs, cases


def _splits(shapes):
    """How many of ``shapes`` take the split form (``x86_int8_block._halves``)."""
    from edgecc.targets.tvm import x86_int8_block as b

    return sum(1 for nb, c, e, _, h, w, _, _ in shapes  # (3 channels: the stem layout)
               if b.SPLIT and nb == 1 and c != 3 and h * w <= b.SPLIT_MAX_PIXELS
               and e >= b.SPLIT_MIN_CHANNELS)


def _build_blocks(tmp_path, xs, cases, name="b.so"):
    """One library with each case twice (its three calls, then fused), loaded: (library, VM,
    the VM's arguments)."""
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import x86_int8, x86_int8_block

    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(list(x.shape), "int8"))
              for i, x in enumerate(xs)]
    rparams = [relax.Var(f"r{i}", relax.TensorType(list(c[7].shape), "float32"))
               for i, c in enumerate(cases) if c[7] is not None]
    flat, took = [], []
    with bb.function("main", params + rparams):
        with bb.dataflow():
            ri = iter(rparams)
            for p, c in zip(params, cases):
                c = c[:7] + ((next(ri) if c[7] is not None else None),) + c[8:]
                three, _ = _block(bb, p, c, False)
                one, fused = _block(bb, p, c, True)
                took.append(fused)
                flat += [*three, *one]
            out = bb.emit_output(relax.Tuple(flat))
        bb.emit_func_output(out)
    assert all(took)  # every case is a block fuse takes
    module = relax.transform.DeadCodeElimination()(bb.get())
    text = module.script()
    assert text.count(f'"{x86_int8_block.SYMBOL}"') == len(cases)
    module = module.with_attr("external_mods", [x86_int8.external_module()])
    lib, vm = build_and_load(module, str(tmp_path / name))
    args = [tvm.runtime.tensor(x) for x in xs] + [tvm.runtime.tensor(c[7]) for c in cases
                                                  if c[7] is not None]
    return lib, vm, args


def _per_case(got, cases):
    """The VM's flat outputs -> per case (the three calls' outputs, the fused call's)."""
    per = [2 if c[7] is not None else 1 for c in cases]
    results, at = [], 0
    for n in per:
        results.append((got[at:at + n], got[at + n:at + 2 * n]))
        at += 2 * n
    return results


def _run_blocks(tmp_path, xs, cases, name="b.so", knob=None):
    """One library with each case twice (its three calls, then fused): per case, the three
    calls' outputs, the fused call's, and the fused calls the library counted."""
    import ctypes

    from edgecc.targets.tvm import x86_int8_block

    lib, vm, args = _build_blocks(tmp_path, xs, cases, name)
    so = ctypes.CDLL(str(tmp_path / name))  # the library TVM loaded (same path: same handle)
    so.edgecc_pool_configure.argtypes = [ctypes.c_int32, ctypes.c_int32]
    so.edgecc_pool_configure(-1, 2)  # (the split form runs on a pool of 2+ threads)
    counter = lib.get_function(x86_int8_block.CALLS, query_imports=True)
    halves = lib.get_function(x86_int8_block.SPLIT_CALLS, query_imports=True)
    before, split_before = counter(), halves()
    got = [o.numpy() for o in vm["main"](*args)]
    ran = (counter() - before, halves() - split_before)
    # on a 1-thread pool the split calls run the whole block: the same outputs, no halves
    so.edgecc_pool_configure(-1, 1)
    try:
        split_before = halves()
        again = [o.numpy() for o in vm["main"](*args)]
        assert halves() == split_before
    finally:
        so.edgecc_pool_configure(-1, 2)
    for a, b in zip(got, again):
        np.testing.assert_array_equal(a, b)
    if knob is not None:  # the split form's halves in turn on the caller: the same outputs
        flag = ctypes.c_int64.in_dll(so, knob)
        flag.value = 0
        try:
            again = [o.numpy() for o in vm["main"](*args)]
        finally:
            flag.value = 1
        for a, b in zip(got, again):
            np.testing.assert_array_equal(a, b)
    return _per_case(got, cases), ran


def _check(xs, cases, results):
    for x, c, (three, one) in zip(xs, cases, results):
        for a, b in zip(three, one):
            np.testing.assert_array_equal(a, b)
        if c[7] is None:  # the integer arithmetic, step by step
            we, wd, wp, ee, ed, ep, s = c[:7]
            y = _requant(_conv_ref(x, we, 3, [1, 1], [0, 0], [1, 1], 1), ee.off, ee.mult,
                         ee.add, ee.shift, ee.lo, ee.hi, ee.zy, 1)
            y = _requant(_conv_ref(y, wd, -5, [s, s], [1, 1], [1, 1], y.shape[1]), ed.off,
                         ed.mult, ed.add, ed.shift, ed.lo, ed.hi, ed.zy, 1)
            y = _requant(_conv_ref(y, wp, 2, [1, 1], [0, 0], [1, 1], 1), ep.off, ep.mult,
                         ep.add, ep.shift, ep.lo, ep.hi, ep.zy, 1)
            np.testing.assert_array_equal(one[0], y)
        assert len(np.unique(one[-1])) > 10  # not saturated


def test_fused_blocks_equal_their_three_calls(tmp_path, monkeypatch):
    """MobileNetV2-32's block shapes (16x16 / 8x8 / 4x4, residual or not, stride 1 and 2, the
    32x32 one) and odd ones (channels not a multiple of 16, 7x5 maps, batch 2): the fused call
    equals the three calls and the integer arithmetic, ran once per block, in the split form
    where it applies (a 2-thread pool), and gives the same outputs with the split's halves run
    in turn (``edgecc_x86_int8_block_split`` 0) and on a 1-thread pool (the whole block)."""
    from edgecc.targets.tvm import x86_int8_block

    monkeypatch.setattr(x86_int8_block, "SPLIT", True)  # the split form where it applies
    rng = np.random.default_rng(7)
    shapes = [(1, 16, 96, 16, 16, 16, 1, True), (1, 16, 96, 24, 16, 16, 2, False),
              (1, 32, 192, 32, 8, 8, 1, True), (1, 48, 288, 80, 8, 8, 2, False),
              (1, 80, 480, 80, 4, 4, 1, True), (1, 80, 480, 160, 4, 4, 1, False),
              (1, 12, 72, 12, 32, 32, 1, True), (2, 5, 30, 7, 7, 5, 1, True),
              (1, 6, 20, 9, 5, 7, 2, False)]
    xs, cases = _cases(rng, shapes)
    results, ran = _run_blocks(tmp_path, xs, cases, knob="edgecc_x86_int8_block_split")
    assert ran == (len(cases), _splits(shapes)) and ran[1] >= 5
    _check(xs, cases, results)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 40), st.integers(1, 200),
                          st.integers(1, 64), st.integers(1, 17), st.integers(1, 17),
                          st.sampled_from([1, 2]), st.booleans()), min_size=3, max_size=6),
       st.integers(0, 2 ** 32 - 1))
@pytest.mark.parametrize("split", [False, True])
def test_random_fused_blocks_equal_their_three_calls(tmp_path, monkeypatch, split, shapes, seed):
    from edgecc.targets.tvm import x86_int8_block

    monkeypatch.setattr(x86_int8_block, "SPLIT", split)
    xs, cases = _cases(np.random.default_rng(seed), shapes)
    # a fresh path per example (dlopen hands back a loaded library of the same path)
    name = f"r{next(_EXAMPLES)}.so"
    results, ran = _run_blocks(tmp_path, xs, cases, name)
    assert ran == (len(cases), _splits(shapes))
    for three, one in results:
        for a, b in zip(three, one):
            np.testing.assert_array_equal(a, b)


def test_fuse_leaves_other_calls_alone():
    """Not a block: a 3x3 project, a float-epilogue depthwise, or ``FUSE_BLOCK`` off."""
    from tvm import relax

    from edgecc.targets.tvm import x86_int8, x86_int8_block

    rng = np.random.default_rng(3)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 8, 8], "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x86_int8.emit_conv(bb, x, random_int8(rng, 32, 8, 1, 1), 0, [1, 1], [0, 0],
                                   [1, 1], random_requant(rng, 32))
            d = x86_int8.emit_depthwise(bb, y, random_int8(rng, 32, 1, 3, 3), 0, [1, 1],
                                        [1, 1], [1, 1], random_requant(rng, 32))
            p3 = x86_int8.emit_conv(bb, d, random_int8(rng, 8, 32, 3, 3), 0, [1, 1], [1, 1],
                                    [1, 1], random_requant(rng, 8))
            assert x86_int8_block.fuse(bb, [p3]) is None
            df = x86_int8.emit_depthwise(bb, y, random_int8(rng, 32, 1, 3, 3), 0, [1, 1],
                                         [1, 1], [1, 1], _float_epilogue(rng, 32))
            assert x86_int8_block.fuse(bb, [df]) is None
            p1 = x86_int8.emit_conv(bb, d, random_int8(rng, 8, 32, 1, 1), 0, [1, 1], [0, 0],
                                    [1, 1], random_requant(rng, 8))
            try:
                x86_int8_block.FUSE_BLOCK = False
                assert x86_int8_block.fuse(bb, [p1]) is None
            finally:
                x86_int8_block.FUSE_BLOCK = True
            assert x86_int8_block.fuse(bb, [p1]) is not None
            out = bb.emit_output(p1)
        bb.emit_func_output(out)


class _Inverted(nn.Module):
    def __init__(self, c, e, p, stride):
        super().__init__()
        self.residual = stride == 1 and c == p
        self.body = nn.Sequential(
            nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
            nn.Conv2d(e, e, 3, stride, 1, groups=e, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
            nn.Conv2d(e, p, 1, bias=False), nn.BatchNorm2d(p))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class _SmallMobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU6())
        self.blocks = nn.Sequential(_Inverted(16, 64, 16, 1), _Inverted(16, 64, 24, 2),
                                    _Inverted(24, 96, 24, 1), _Inverted(24, 96, 32, 2))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_w8a8_model_fused_blocks_equal_the_unfused_build(tmp_path):
    """A small MobileNetV2 (w8a8, x86 int8 kernels): the build with its 4 blocks fused gives
    the unfused build's outputs bit for bit, says so in the report, and runs the fused call."""
    import tvm

    from edgecc.targets.tvm import x86_int8_block

    torch.manual_seed(0)
    model = _SmallMobileNet().eval()
    x = torch.randn(1, 3, 32, 32)
    calib = [(torch.randn(1, 3, 32, 32),) for _ in range(4)]
    outs, blocks = {}, {}
    try:
        for fuse in (False, True):
            x86_int8_block.FUSE_BLOCK = fuse
            with torch.no_grad():
                res = edgecc.compile(model, "host", example_inputs=(x,),
                                     pipeline="fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                                     calibration=calib, output_dir=str(tmp_path / f"o{fuse}"),
                                     progress=False, target_options={"integer_kernels": True})
                res.run(x)  # loads the library
                lib = tvm.runtime.load_module(res._runner.library)  # the same handle
                counter = lib.get_function(x86_int8_block.CALLS, query_imports=True)
                before = counter()
                out = res.run(x)
                ran = counter() - before
            outs[fuse] = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
            blocks[fuse] = (res.report["lowering"]["integer_kernels"].get("x86_blocks", 0), ran)
    finally:
        x86_int8_block.FUSE_BLOCK = True
    assert blocks[False] == (0, 0)
    assert blocks[True] == (4, 4)
    np.testing.assert_array_equal(outs[True], outs[False])
