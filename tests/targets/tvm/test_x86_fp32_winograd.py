"""Winograd F(2x2, 3x3) same-size 3x3 convolutions (``x86_fp32_winograd``): on by default
(``edgecc_x86_fp32_winograd`` 1; the direct-path kernel tests set it to 0); the eligible
convolutions take it (path 16 counts every call: a silent fallback fails) and agree with the
direct path and with PyTorch float64 within 1e-5 relative (max|a - b| / max|ref|), bias,
residual and ReLU fused; the knob switches per call in one loaded library. A build's constant
weights are packed once per library into its cache (path 17, ``edgecc_x86_fp32_winograd_packs``),
bit-identical to the per-call transform, never handed to another tensor (same address or not),
and the artifact carries W alone."""

import ctypes

import numpy as np
import pytest

from edgecc.targets.tvm import lowering, x86_fp32
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="Winograd runs on AVX-512 only"),
]

WINOGRAD_PATH = 16
BOUND = 1e-5  # max|a - b| / max|ref|; measured <= 4e-7 (the module docstring)


@pytest.fixture(autouse=True)
def f2x2_tiles(kernels):
    """The kernel tests here are F(2x2, 3x3)'s: ``edgecc_x86_fp32_winograd_tile`` = 2 on the
    kernels' library (4, the default, sends 16- and 32-wide maps to F(4x4):
    test_x86_fp32_winograd4.py); built models keep their default."""
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_winograd_tile")
    old, var.value = var.value, 2
    yield
    var.value = old


def _winograd_calls(kernels) -> int:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    return int(kernels[0].get_function(PATH_QUERY)(WINOGRAD_PATH))


def _conv_with(kernels, knob: int, *args, **kwargs) -> tuple[np.ndarray, int]:
    """(output, Winograd calls it made) of one _conv with ``edgecc_x86_fp32_winograd`` = knob."""
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_winograd")
    old, var.value = var.value, knob
    try:
        before = _winograd_calls(kernels)
        out = _conv(kernels, *args, **kwargs)
        return out, _winograd_calls(kernels) - before
    finally:
        var.value = old


def _rel(a, ref) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


# ResNet-20's three stages (and a batch of 2, odd channel counts, a 12x20 map whose panels
# span tile rows unevenly)
SHAPES = [(16, 16, 32, 1), (32, 32, 16, 1), (64, 64, 8, 1), (16, 16, 32, 2), (24, 40, 12, 1),
          (9, 7, (12, 20), 2)]


@pytest.mark.parametrize("c,oc,hw,batch", SHAPES)
@pytest.mark.parametrize("residual,relu", [(False, False), (True, True), (False, True)])
def test_winograd_matches_direct_and_torch(kernels, c, oc, hw, batch, residual, relu):
    """Knob 1: every call counted on path 16, within BOUND of the direct path
    (knob 0, nothing counted) and of PyTorch float64, with bias, residual and ReLU fused."""
    h, w_ = (hw, hw) if isinstance(hw, int) else hw
    rng = np.random.default_rng(c * oc + h)
    x = rng.standard_normal((batch, c, h, w_), np.float32)
    w = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc, np.float32)
    res = rng.standard_normal((batch, oc, h, w_), np.float32) if residual else None
    lo = 0.0 if relu else -np.inf
    fast, n_fast = _conv_with(kernels, 1, x, w, b, pad=1, res=res, lo=lo)
    direct, n_direct = _conv_with(kernels, 0, x, w, b, pad=1, res=res, lo=lo)
    assert (n_fast, n_direct) == (1, 0)
    ref = _torch_conv(x, w, b, 1, 1, res, lo=lo)
    assert _rel(fast, direct) <= BOUND and _rel(fast, ref) <= BOUND
    assert _rel(direct, ref) <= BOUND


GROUP_KNOB = "edgecc_x86_fp32_wg_group_panels"


@pytest.mark.parametrize("c,oc,hw,batch", SHAPES)
def test_every_group_size_gives_the_same_sums(kernels, c, oc, hw, batch):
    """Pool items of 1 panel (the default, ``edgecc_x86_fp32_wg_group_panels`` = 1), 2 and up
    to 4 (the grouping before): every call on path 16 and bit-identical outputs (residual +
    ReLU), on one thread and on the pool (``edgecc_x86_serial_work_log2`` -62: every job
    pooled)."""
    h, w_ = (hw, hw) if isinstance(hw, int) else hw
    rng = np.random.default_rng(c + oc + h)
    x = rng.standard_normal((batch, c, h, w_), np.float32)
    w = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc, np.float32)
    res = rng.standard_normal((batch, oc, h, w_), np.float32)
    group = ctypes.c_int32.in_dll(kernels[1], GROUP_KNOB)
    serial = ctypes.c_int64.in_dll(kernels[1], "edgecc_x86_serial_work_log2")
    assert group.value == 1
    outs = []
    try:
        for shift in (0, -62):
            serial.value = shift
            for value in (1, 2, 4):
                group.value = value
                out, calls = _conv_with(kernels, 1, x, w, b, pad=1, res=res, lo=0.0)
                assert calls == 1
                outs.append(out)
    finally:
        group.value, serial.value = 1, 0
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert _rel(outs[0], _torch_conv(x, w, b, 1, 1, res, lo=0.0)) <= BOUND


NARROW_PATH = 20


@pytest.mark.parametrize("c,oc,hw,batch", [(64, 64, 8, 1), (32, 32, 16, 1), (16, 24, (12, 16), 2),
                                           (9, 16, (6, 8), 1), (16, 16, (10, 8), 1),
                                           (16, 16, (2, 16), 1)])
def test_narrow_maps_read_rows_into_registers(kernels, c, oc, hw, batch):
    """Maps 8 or 16 wide (any even height: a last panel of one tile row, maps of one tile row)
    take the register-row input transform (path 20 counts each call; knob
    ``edgecc_x86_fp32_wg_narrow`` 0: the per-run masked loads, nothing counted), bit-identical
    to it with residual and ReLU, within BOUND of PyTorch."""
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    h, w_ = (hw, hw) if isinstance(hw, int) else hw
    rng = np.random.default_rng(c * 3 + oc + h)
    x = rng.standard_normal((batch, c, h, w_), np.float32)
    w = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc, np.float32)
    res = rng.standard_normal((batch, oc, h, w_), np.float32)
    knob = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_wg_narrow")
    query = kernels[0].get_function(PATH_QUERY)
    assert knob.value == 1
    outs, narrow = [], []
    try:
        for value in (1, 0):
            knob.value = value
            before = int(query(NARROW_PATH))
            out, calls = _conv_with(kernels, 1, x, w, b, pad=1, res=res, lo=0.0)
            assert calls == 1
            outs.append(out)
            narrow.append(int(query(NARROW_PATH)) - before)
    finally:
        knob.value = 1
    assert narrow == [1, 0]
    assert np.array_equal(outs[0], outs[1])
    assert _rel(outs[0], _torch_conv(x, w, b, 1, 1, res, lo=0.0)) <= BOUND


def test_ineligible_convolutions_fall_back(kernels):
    """Odd maps, fewer than 8 input channels and stride 2 keep the direct paths under the
    knob (no Winograd call) and their results."""
    rng = np.random.default_rng(3)
    for c, h, stride in [(16, 15, 1), (3, 32, 1), (16, 32, 2)]:
        x = rng.standard_normal((1, c, h, h), np.float32)
        w = rng.standard_normal((16, c, 3, 3), np.float32)
        b = rng.standard_normal(16, np.float32)
        out, calls = _conv_with(kernels, 1, x, w, b, stride=stride, pad=1)
        assert calls == 0
        assert np.array_equal(out, _conv_with(kernels, 0, x, w, b, stride=stride, pad=1)[0])


def _packs(kernels) -> int:
    return int(ctypes.c_int64.in_dll(kernels[1], "edgecc_x86_fp32_winograd_packs").value)


def _sconv_flagged(kernels, x, weight, b, flag):
    """(output, path-17 calls, packings) of one 32->32 @16 ReLU conv called with Winograd on
    and meta[15] = ``flag``; ``weight`` a tvm tensor (its FFI object is the cache's key)."""
    import tvm

    meta = np.array([1, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 16, 16, flag], np.int64)
    args = [tvm.runtime.tensor(a) for a in (x, b, meta, np.array([0.0, np.inf], np.float32))]
    out = tvm.runtime.tensor(np.zeros((1, 32, 16, 16), np.float32))
    query = kernels[0].get_function("edgecc_x86_fp32_path_calls")
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_winograd")
    before, packs, var.value = int(query(17)), _packs(kernels), 1
    try:
        kernels[0].get_function("edgecc_x86_sconv")(args[0], weight, *args[1:], out)
    finally:
        var.value = 0
    return out.numpy(), int(query(17)) - before, _packs(kernels) - packs


def test_packed_and_cached_weights_equal_the_per_call_transform(kernels):
    """The build's packing (``weights`` after W, meta[15] = 1), the library's cache (meta[15]
    = 2: packed at the first call of a weights tensor, reused after) and the kernel's per-call
    transform give bit-identical outputs; each counts on path 17 but the per-call one."""
    import tvm

    from edgecc.targets.tvm import x86_fp32_winograd

    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 32, 16, 16), np.float32)
    w = rng.standard_normal((32, 32, 3, 3), np.float32)
    b = rng.standard_normal(32, np.float32)
    own, _ = _conv_with(kernels, 1, x, w, b, pad=1, lo=0.0)
    packed = np.concatenate([w.reshape(-1), x86_fp32_winograd.weights(w).reshape(-1)])
    assert _sconv_flagged(kernels, x, tvm.runtime.tensor(packed), b, 1)[1:] == (1, 0)
    assert np.array_equal(_sconv_flagged(kernels, x, tvm.runtime.tensor(packed), b, 1)[0], own)
    weight = tvm.runtime.tensor(w.reshape(32, -1))
    runs = [_sconv_flagged(kernels, x, weight, b, 2) for _ in range(2)]
    assert [r[1:] for r in runs] == [(1, 1), (1, 0)]  # packed once, then from the cache
    assert all(np.array_equal(r[0], own) for r in runs)
    assert _sconv_flagged(kernels, x, weight, b, 0)[1:] == (0, 0)  # no flag: per call


def test_a_new_weights_tensor_never_gets_another_ones_cached_weights(kernels):
    """Cache entries are keyed by the weights' FFI object, held by a weak reference, not by
    the data address: tensors made in turn over ONE buffer (the same address every round; a
    cache keyed by the pointer returned the first round's weights), each freed after its
    call, get their own weights' result, packed anew each round."""
    import gc

    import tvm

    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 32, 16, 16), np.float32)
    b = np.zeros(32, np.float32)
    raw = np.zeros(32 * 288 + 16, np.float32)  # from_dlpack wants 64-byte aligned data
    start = (-raw.ctypes.data % 64) // 4
    buf = raw[start:start + 32 * 288].reshape(32, 288)
    for _ in range(4):
        w = rng.standard_normal((32, 32, 3, 3), np.float32)
        expected, _ = _conv_with(kernels, 1, x, w, b, pad=1, lo=0.0)
        buf[:] = w.reshape(32, -1)
        weight = tvm.runtime.from_dlpack(buf)  # no copy: the data at buf's address
        assert np.from_dlpack(weight).ctypes.data == buf.ctypes.data
        out, cached, packs = _sconv_flagged(kernels, x, weight, b, 2)
        assert (cached, packs) == (1, 1) and np.array_equal(out, expected)
        del weight
        gc.collect()


def _resnet_like(seed: int):
    """(model, input): 16->16 @32 with residual, a stride-2 conv, 32->32 @16, another, 64->64
    @8 (3 Winograd-eligible convolutions), weights drawn from ``seed``."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(16, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.c = nn.Conv2d(32, 32, 3, padding=1)
            self.d = nn.Conv2d(32, 64, 3, stride=2, padding=1)
            self.e = nn.Conv2d(64, 64, 3, padding=1)

        def forward(self, x):
            y = torch.relu(self.a(x) + x)
            y = torch.relu(self.c(torch.relu(self.b(y))))
            return torch.relu(self.e(torch.relu(self.d(y))))

    torch.manual_seed(seed)
    return Net().eval(), torch.randn(1, 16, 32, 32)


def _build(path, seed: int):
    import edgecc

    m, x = _resnet_like(seed)
    res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="", output_dir=str(path))
    res.run(x)  # loads the library (res._runner.library: the copy loaded)
    return m, x, res


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Two default builds of the ResNet-like net with different weights: seed -> (model,
    input, CompileResult)."""
    return {seed: _build(tmp_path_factory.mktemp(f"wg{seed}"), seed) for seed in (0, 1)}


def _expected(m, x) -> np.ndarray:
    import torch

    with torch.no_grad():
        return m(x).double().numpy()


def _counters(runner) -> tuple[int, int, int]:
    """(path 16 calls, path 17 calls, packings) of the library ``runner`` loaded."""
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    query = runner.module.get_function(PATH_QUERY, query_imports=True)
    packs = ctypes.c_int64.in_dll(ctypes.CDLL(runner.library), "edgecc_x86_fp32_winograd_packs")
    return int(query(16)), int(query(17)), int(packs.value)


def test_the_default_build_runs_winograd_on_weights_packed_once(builds):
    """The default build (knob 1 as linked) runs its 3 eligible convs through Winograd on
    every call (path 16) from the library's cache (path 17: no per-call transform): the first
    run of a loaded module packs 3 weights, later runs none; the same library loaded again (the
    same dlopen handle, so the same cache, new constant tensors) packs its own, also after the
    first one was freed; every output within 1e-5 of PyTorch, all bit-identical."""
    import gc

    from edgecc.targets.tvm.runner import VmRunner

    m, x, res = builds[0]
    library = res._runner.library
    assert ctypes.c_int32.in_dll(ctypes.CDLL(library), "edgecc_x86_fp32_winograd").value == 1
    expected, outs = _expected(m, x), []
    first = VmRunner(library)
    for loaded in ("first", "second", "third"):
        runner = first if loaded == "first" else VmRunner(library)
        c0 = _counters(runner)
        # the first run calls main twice (VmRunner: to learn which outputs each call
        # allocates; the second run's kernel calls recorded as the native plan,
        # plan_runner.recorded_run): 6 Winograd calls from 3 packings (weights packed per
        # call would be 6)
        outs.append(runner.run(x)[0].numpy())
        c1 = _counters(runner)
        outs.append(runner.run(x)[0].numpy())
        c2 = _counters(runner)
        assert (c1[2] - c0[2], c1[0] - c0[0], c1[1] - c0[1]) == (3, 6, 6), loaded
        assert (c2[2] - c1[2], c2[0] - c1[0], c2[1] - c1[1]) == (0, 3, 3), loaded
        if loaded == "second":
            del first, runner
            gc.collect()
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert _rel(outs[0], expected) <= BOUND


def test_two_modules_pack_concurrently(builds):
    """Two modules of one library (one cache) run from two threads at once, from their first
    call on: each packs its own 3 weights once (6 packings in all), and every output is
    bit-identical to the single-threaded one."""
    import threading

    import tvm
    from tvm import relax

    from edgecc.targets.tvm.runner import torch_outputs

    m, x, res = builds[0]
    library = res._runner.library
    want = res._runner.run(x)[0].numpy()
    mains = [relax.VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())["main"]
             for _ in range(2)]
    arg = tvm.runtime.tensor(x.numpy())
    packs = ctypes.c_int64.in_dll(ctypes.CDLL(library), "edgecc_x86_fp32_winograd_packs")
    before, outs, start = packs.value, [[], []], threading.Barrier(2)

    def work(i):
        start.wait()
        for _ in range(10):
            outs[i].append(torch_outputs(mains[i](arg))[0].numpy().copy())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert packs.value - before == 6
    assert [len(run) for run in outs] == [10, 10]
    assert all(np.array_equal(o, want) for run in outs for o in run)


def test_two_builds_never_mix_their_weights(builds):
    """Two builds of one net with different weights, each loaded, run and freed in turn, twice
    (constants of the same sizes, often at the same addresses): each output is its own
    model's, within 1e-5 of PyTorch and bit-identical from round to round."""
    import gc

    from edgecc.targets.tvm.runner import VmRunner

    seen: dict[int, np.ndarray] = {}
    for _ in range(2):
        for seed, (m, x, res) in builds.items():
            runner = VmRunner(res._runner.library)
            out = runner.run(x)[0].numpy()
            assert _rel(out, _expected(m, x)) <= BOUND
            assert np.array_equal(out, seen.setdefault(seed, out))
            del runner
            gc.collect()
    assert not np.array_equal(seen[0], seen[1])


def test_a_built_model_switches_at_run_time(builds, tmp_path, monkeypatch):
    """The knob moved between calls of one loaded library sends the 3 eligible convs through
    Winograd (path 16: 3 calls a run at 1, none at 0), within 1e-5 of knob 0 and of PyTorch,
    in the default build (weights from the library's cache: path 17) and in a build marked
    ``with_winograd_weights`` (here: by patching the check the rewrite makes; the packed
    weights: path 17 too). The default build's artifact is smaller than the marked one's by
    about the Winograd weights (16 floats per output x input channel): it carries W alone."""
    import os

    m, x, default = builds[0]
    monkeypatch.setattr(x86_fp32, "wants_winograd_weights", lambda module: True)
    _, _, marked = _build(tmp_path / "marked", 0)
    expected = _expected(m, x)
    u_bytes = 4 * 16 * (16 * 16 + 32 * 32 + 64 * 64)
    grown = os.path.getsize(marked._runner.library) - os.path.getsize(default._runner.library)
    assert 0.9 * u_bytes <= grown <= 1.1 * u_bytes
    for res in (default, marked):
        runner = res._runner
        knob = ctypes.c_int32.in_dll(ctypes.CDLL(runner.library), "edgecc_x86_fp32_winograd")
        outs, counts = {}, {}
        try:
            for value in (1, 0):
                knob.value = value
                before = _counters(runner)
                outs[value] = np.asarray(res.run(x))
                after = _counters(runner)
                counts[value] = (after[0] - before[0], after[1] - before[1])
        finally:
            knob.value = 1
        assert counts == {1: (3, 3), 0: (0, 0)}
        assert _rel(outs[1], outs[0]) <= BOUND and _rel(outs[1], expected) <= BOUND


def test_only_a_marked_module_carries_the_winograd_weights():
    """``rewrite`` packs the Winograd weights after W (meta[15] = 1, the constant 1 + 16/9 of
    W) only in a module marked by ``with_winograd_weights``; the default build's constants
    are W alone, flagged as the build's constant (meta[15] = 2: the kernel's cache)."""
    import torch
    import torch.nn as nn

    from tvm import relax

    import edgecc

    conv = nn.Conv2d(16, 16, 3, padding=1).eval()
    program = edgecc.trace(conv, (torch.randn(1, 16, 8, 8),))
    module = lowering.to_relax(program)
    sizes = {}
    for marked in (False, True):
        source = x86_fp32.with_winograd_weights(module) if marked else module
        assert x86_fp32.wants_winograd_weights(source) is marked
        rewritten, stats = x86_fp32.rewrite(source)
        assert stats.conv == 1
        calls = [b.value for f in rewritten.functions.values() if isinstance(f, relax.Function)
                 for blk in f.body.blocks for b in blk.bindings
                 if isinstance(b.value, relax.Call) and isinstance(b.value.args[0],
                                                                    relax.ExternFunc)]
        (call,) = calls
        consts = [a.value.numpy() for a in call.args[1].fields if hasattr(a, "value")]
        weight, meta = consts[0], consts[2]
        sizes[marked] = (weight.size, len(meta), int(meta[15]) if len(meta) > 15 else 0)
    assert sizes == {False: (16 * 16 * 9, 16, 2), True: (16 * 16 * 9 + 16 * 16 * 16, 16, 1)}
