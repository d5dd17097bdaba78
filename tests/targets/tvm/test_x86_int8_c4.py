"""``x86_int8_c4``: int8 activations handed between stride-1 convolutions in the consumer's
padded channel-quad layout equal the NCHW build bit for bit (and the integer arithmetic) —
kernel level on ResNet-20-like chains (a requantized conv1 into a residual conv2 with float
and int8 outputs into the next conv1; 32x32 / 16x16 / 8x8 maps, the stem's 3 channels),
serial and pooled, the fast path counted (``edgecc_x86_int8_c4_in_calls`` / ``_out_calls``)
and ``edgecc_x86_int8_c4`` 0 (every call through the NCHW fallback) equal; random shapes by
hypothesis; and a whole w8a8 ResNet against the build with ``ENABLED`` off."""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.targets.tvm.int8_cases import (POOL, SERIAL, full_range, pooled_library, w8a8_program,
                                          random_int8, random_requant)
from tests.targets.tvm.test_x86_int8 import _avx2, _conv_ref, _cpu_flags, _requant

_EXAMPLES = itertools.count()
pytestmark = pytest.mark.skipif(not _avx2(), reason="the x86 int8 kernels need AVX2")


def _fast_here() -> bool:
    """This CPU takes conv_direct4 (AVX-512 VNNI): the c4 fast path runs; AMX
    CPUs too (their convolutions on the tiles are opt-in)."""
    return {"avx512_vnni", "avx512bw"} <= _cpu_flags()


def _float_epilogue(rng, n):
    from edgecc.targets.tvm import x86_int8

    return x86_int8.Epilogue(off=rng.integers(-3000, 3000, n).astype(np.int32), requant=False,
                             scale=(rng.random(n) * 2e-4).astype(np.float32),
                             bias=(rng.standard_normal(n) * 0.5).astype(np.float32))


def _cases(rng, shapes):
    """Per (C in, C, H, W): x, its zero point, the stem-like conv0's weights and float
    epilogue (+ relu, float and int8 out), conv1's weights and requant epilogue (relu-like
    clamp), conv2's weights and float epilogue (+ the float residual, relu, float and int8
    out), conv3's weights and requant epilogue (its output NCHW), the int8 zero points."""
    out = []  # (conv1 clamps in every other case, in the others the whole int8 range)
    for i, (cin, c, h, w) in enumerate(shapes):
        out.append(dict(
            x=random_int8(rng, 1, cin, h, w), zx=int(rng.integers(-20, 21)),
            w0=random_int8(rng, c, cin, 3, 3), e0=_float_epilogue(rng, c),
            w1=random_int8(rng, c, c, 3, 3),
            e1=random_requant(rng, c) if i % 2 else full_range(random_requant(rng, c)),
            w2=random_int8(rng, c, c, 3, 3), e2=_float_epilogue(rng, c),
            w3=random_int8(rng, c, c, 3, 3), e3=random_requant(rng, c),
            q0=(0.05, float(rng.integers(-10, 10))), q2=(0.05, float(rng.integers(-10, 10)))))
    return out


def _emit_chain(bb, xv, case, c4: bool):
    """stem -> conv1 -> conv2 (+ residual: the stem's float) -> conv3; with ``c4`` every
    int8 hand-off in the c4 layout. Returns the stem's float, its int8 (NCHW: the view), conv1's
    int8, conv2's float and int8, conv3's int8."""
    from edgecc.targets.tvm import x86_int8, x86_int8_c4
    from edgecc.targets.tvm.x86_int8_c4 import C4Out, C4Source

    c, h, w = case["w0"].shape[0], case["x"].shape[2], case["x"].shape[3]
    shape = (1, c, h, w)
    ones, pad = [1, 1], [1, 1]
    # the int8 zero points: the stem's, conv1's (random_requant's zy 3), conv2's — each the
    # next conv's input zero point and its c4 border
    z0, z1, z2 = int(case["q0"][1]), 3, int(case["q2"][1])

    def out(zx):
        return C4Out(1, 1, zx) if c4 else None

    def src(t):
        if not c4:
            return t, None
        view = x86_int8_c4.nchw_view(bb, t, shape, 1, 1)
        return view, C4Source(t, view, shape, 1, 1)

    post0 = x86_int8.Post(act="relu", float_out=True, quant=(*case["q0"], -128, 127))
    f0, q0 = x86_int8.emit_conv(bb, xv, case["w0"], case["zx"], ones, pad, ones, case["e0"],
                                post0, c4_out=out(z0))
    v0, s0 = src(q0)
    y1 = x86_int8.emit_conv(bb, v0, case["w1"], z0, ones, pad, ones, case["e1"], c4_in=s0,
                            c4_out=out(z1))
    v1, s1 = src(y1)
    post2 = x86_int8.Post(residual=f0, post_relu=True, float_out=True,
                          quant=(*case["q2"], -128, 127))
    f2, q2 = x86_int8.emit_conv(bb, v1, case["w2"], z1, ones, pad, ones, case["e2"], post2,
                                c4_in=s1, c4_out=out(z2))
    v2, s2 = src(q2)
    y3 = x86_int8.emit_conv(bb, v2, case["w3"], z2, ones, pad, ones, case["e3"], c4_in=s2)
    return [f0, v0, v1, f2, v2, y3]


def _library(tmp_path, cases, name):
    """One library running each case's chain in the NCHW form, then in the c4 form:
    (VM, CDLL, (c4 in counter, c4 out counter))."""
    from tvm import relax

    from edgecc.targets.tvm import x86_int8, x86_int8_c4

    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(list(c["x"].shape), "int8"))
              for i, c in enumerate(cases)]
    flat = []
    with bb.function("main", params):
        with bb.dataflow():
            for p, case in zip(params, cases):
                flat += _emit_chain(bb, p, case, False) + _emit_chain(bb, p, case, True)
            out = bb.emit_output(relax.Tuple(flat))
        bb.emit_func_output(out)
    module = relax.transform.DeadCodeElimination()(bb.get())
    module = module.with_attr("external_mods", [x86_int8.external_module()])
    path = str(tmp_path / name)
    lib, vm, so = pooled_library(module, path)
    return vm, so, (lib.get_function(x86_int8_c4.C4_IN, query_imports=True),
                    lib.get_function(x86_int8_c4.C4_OUT, query_imports=True))


def _check(cases, run, reference=True):
    for i, case in enumerate(cases):
        plain, c4 = run[12 * i:12 * i + 6], run[12 * i + 6:12 * i + 12]
        for a, b in zip(plain, c4):
            np.testing.assert_array_equal(b, a)
        if reference:  # conv1 (its input the stem's int8) against the integer arithmetic
            e1 = case["e1"]
            acc = _conv_ref(plain[1], case["w1"], int(case["q0"][1]), [1, 1], [1, 1], [1, 1], 1)
            np.testing.assert_array_equal(plain[2], _requant(
                acc, e1.off, e1.mult, e1.add, e1.shift, e1.lo, e1.hi, e1.zy, 1))
            assert len(np.unique(plain[2])) > 10 and len(np.unique(plain[4])) > 10


def _runs(so, vm, args, counters, expected):
    """Runs with the knob on then off, serial then pooled; asserts each counter grew by
    ``expected`` (in, out) a run with the knob on and not at all with it off."""
    knob = ctypes.c_int64.in_dll(so, "edgecc_x86_int8_c4")
    assert knob.value == 1
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    runs = []
    try:
        for on in (1, 0):
            knob.value = on
            for pool in (SERIAL, POOL):
                shift.value = pool
                before = [int(f()) for f in counters]
                for _ in range(2):
                    runs.append([o.numpy() for o in vm["main"](*args)])
                grown = [int(f()) - b for f, b in zip(counters, before)]
                assert grown == [2 * on * e for e in expected], (on, pool, grown)
    finally:
        knob.value, shift.value = 1, 0
    return runs


def test_c4_chains_equal_the_nchw_build(tmp_path):
    """ResNet-20's maps (16 @32x32, 32 @16x16, 64 @8x8: 16- and 8-column outputs; the stem's
    3 input channels) and channels that are quads but not 8s (12: a producer's call falls back
    to NCHW copies, a consumer that produces no c4 still reads in place): equal to the NCHW
    chain and the integer arithmetic, serial and pooled, the knob on (counted) and off (not
    counted)."""
    import tvm

    rng = np.random.default_rng(11)
    shapes = [(3, 16, 32, 32), (16, 32, 16, 16), (32, 64, 8, 8), (8, 12, 16, 16)]
    cases = _cases(rng, shapes)
    vm, so, counters = _library(tmp_path, cases, "c4.so")
    args = [tvm.runtime.tensor(c["x"]) for c in cases]
    fast = _fast_here()
    # per case: consumers conv1, conv2, conv3 (3 in place), producers stem, conv1, conv2
    # (3 c4 stores) — the 12-channel case's producers (not 8-channel tiles) run the whole
    # call on NCHW copies, so only its conv3 reads in place
    expected = [3 * len(cases) - 2 if fast else 0, 3 * (len(cases) - 1) if fast else 0]
    for run in _runs(so, vm, args, counters, expected):
        _check(cases, run)


@settings(max_examples=settings.default.max_examples, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([3, 4, 8, 16]), st.integers(1, 6).map(lambda q: 8 * q),
                          st.sampled_from([2, 4, 6, 8, 10, 12, 16, 32]),
                          st.sampled_from([8, 16, 32, 48])), min_size=1, max_size=3),
       st.integers(0, 2 ** 32 - 1))
def test_random_c4_chains_equal_the_nchw_build(tmp_path, shapes, seed):
    import tvm

    cases = _cases(np.random.default_rng(seed), shapes)
    vm, so, counters = _library(tmp_path, cases, f"r{next(_EXAMPLES)}.so")
    shift = ctypes.c_int64.in_dll(so, "edgecc_x86_serial_work_log2")
    try:
        for pool in (SERIAL, POOL):
            shift.value = pool
            before = int(counters[0]())
            run = [o.numpy() for o in vm["main"](*[tvm.runtime.tensor(c["x"]) for c in cases])]
            assert int(counters[0]()) - before == (3 * len(cases) if _fast_here() else 0)
            _check(cases, run, reference=False)
    finally:
        shift.value = 0


def _resnet(blocks):
    from examples.models import ResNet, calibrate_bn

    return calibrate_bn(ResNet(blocks_per_stage=blocks), (8, 3, 32, 32), seed=0).eval()


@pytest.mark.parametrize("blocks", [1, 3])
def test_w8a8_resnet_c4_equals_the_nchw_build(tmp_path, monkeypatch, blocks):
    """A w8a8 ResNet (one block a stage; three: ResNet-20), x86 int8 kernels: with
    ``ENABLED`` the stem, the stride-1 conv1s and the conv2s whose int8 feeds a stride-1 conv1
    store c4 outputs and their consumers read them in place (the report counts them, the
    kernels' counter proves they ran, at 1 and 2 threads), and the outputs equal the NCHW
    build's bit for bit (and stay within one step of the head's input of the simulator's)."""
    import tvm
    import tvm.relax
    import torch

    from edgecc.quant import is_quantize
    from edgecc.targets.tvm import lowering, x86_int8, x86_int8_c4

    torch.manual_seed(0)
    model = _resnet(blocks)
    program, x = w8a8_program(model)
    outs, stats = {}, {}
    for on in (False, True):
        monkeypatch.setattr(x86_int8_c4, "ENABLED", on)
        report: dict = {}
        module = lowering.to_relax(program, integer_kernels=True, isa=x86_int8.ISA,
                                   report=report)
        main = module.script().split("def main")[1]
        assert ("permute_dims" in main) is False  # every view unused: dropped
        path = str(tmp_path / f"m{on}.so")
        lowering.build(module, lowering.llvm_target(None, 2), path)
        lib = tvm.runtime.load_module(path)
        vm = tvm.relax.VirtualMachine(lib, tvm.cpu())
        so = ctypes.CDLL(path)
        so.edgecc_pool_configure.argtypes = [ctypes.c_int32, ctypes.c_int32]
        counter = lib.get_function(x86_int8_c4.C4_IN, query_imports=True)
        ran = []
        for threads in (1, 2):
            so.edgecc_pool_configure(-1, threads)
            before = int(counter())
            got = vm["main"](tvm.runtime.tensor(x.numpy()))
            ran.append(int(counter()) - before)
            out = (got[0] if not hasattr(got, "numpy") else got).numpy()
            if on in outs:
                np.testing.assert_array_equal(out, outs[on])
            outs[on] = out
        stats[on] = (report.get("x86_c4_out", 0), report.get("x86_c4_inplace", 0), *ran)
    # ResNet with n blocks a stage: 6n + 1 convs of 3x3 (the stem, 2 a block) and 2 1x1
    # shortcuts; the int8 of the stem and of each stride-1 block's conv1 / conv2 feeds
    # stride-1 convs, except the conv2s before the two stride-2 blocks and the last one (whose
    # output goes to the head): 1 + 3n - 2 + 3n - 3 c4 outputs, each read by one conv
    n = 6 * blocks - 4
    fast = n if _fast_here() else 0
    assert stats == {False: (0, 0, 0, 0), True: (n, n, fast, fast)}, stats
    np.testing.assert_array_equal(outs[True], outs[False])
    q = [m for m in program.nodes("call_function") if is_quantize(m)][-1]
    step = float(program.tensor(q.args[1]).max())
    bound = step * model.fc.weight.detach().abs().sum(dim=1).max().item() + 1e-5
    assert np.abs(outs[True] - program.run(x)[0].numpy()).max() <= bound
