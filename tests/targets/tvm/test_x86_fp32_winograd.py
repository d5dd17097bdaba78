"""Winograd F(2x2, 3x3) same-size 3x3 convolutions (``x86_fp32_winograd``): off by default
(the direct path runs, nothing counted on path 16); with ``edgecc_x86_fp32_winograd`` set the
eligible convolutions take it (path 16 counts every call: a silent fallback fails) and agree
with the direct path and with PyTorch float64 within 1e-5 relative (max|a - b| / max|ref|),
bias, residual and ReLU fused; the knob switches per call in one loaded library."""

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


def test_the_knob_is_off_by_default(kernels):
    """The default build runs the direct paths: the knob reads 0 and a 16->16 @32 conv counts
    no Winograd call."""
    assert ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_winograd").value == 0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 32, 32), np.float32)
    w = rng.standard_normal((16, 16, 3, 3), np.float32)
    before = _winograd_calls(kernels)
    _conv(kernels, x, w, np.zeros(16, np.float32), pad=1)
    assert _winograd_calls(kernels) == before


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


def test_packed_weights_equal_the_per_call_transform(kernels):
    """The build's packing (``weights`` after W, meta[15] = 1: path 17) and the kernel's
    per-call transform give bit-identical outputs."""
    import tvm

    from edgecc.targets.tvm import x86_fp32_winograd

    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 32, 16, 16), np.float32)
    w = rng.standard_normal((32, 32, 3, 3), np.float32)
    b = rng.standard_normal(32, np.float32)
    own, _ = _conv_with(kernels, 1, x, w, b, pad=1, lo=0.0)
    meta = np.array([1, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 16, 16, 1], np.int64)
    packed = np.concatenate([w.reshape(-1), x86_fp32_winograd.weights(w).reshape(-1)])
    args = [x, packed, b, meta, np.array([0.0, np.inf], np.float32)]
    out = tvm.runtime.tensor(np.zeros((1, 32, 16, 16), np.float32))
    query = kernels[0].get_function("edgecc_x86_fp32_path_calls")
    var = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_winograd")
    before, var.value = int(query(17)), 1
    try:
        kernels[0].get_function("edgecc_x86_sconv")(
            *[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args], out)
    finally:
        var.value = 0
    assert int(query(17)) - before == 1
    assert np.array_equal(out.numpy(), own)


@pytest.mark.parametrize("packed", [False, True], ids=["default-build", "packed-weights"])
def test_a_built_model_switches_at_run_time(tmp_path, monkeypatch, packed):
    """A ResNet-style build (16->16 @32 with residual, 32->32 @16, 64->64 @8, a stride-2 conv
    between): the knob moved between calls of the one loaded library sends its 3 eligible
    convs through Winograd (path 16: 3 calls a run at knob 1, none at 0), within 1e-5 of knob
    0 and of PyTorch. The default build carries no Winograd weights (the kernel transforms per
    call: path 17 stays at 0); a build marked ``with_winograd_weights`` (here: every module,
    by patching the check the rewrite makes) uses its packed weights (path 17: 3 a run)."""
    import torch
    import torch.nn as nn

    import edgecc
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

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

    torch.manual_seed(0)
    m = Net().eval()
    x = torch.randn(1, 16, 32, 32)
    if packed:
        monkeypatch.setattr(x86_fp32, "wants_winograd_weights", lambda module: True)
    res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                         output_dir=str(tmp_path / "o"))
    res.run(x)
    knob = ctypes.c_int32.in_dll(ctypes.CDLL(res._runner.library), "edgecc_x86_fp32_winograd")
    query = res._runner.module.get_function(PATH_QUERY, query_imports=True)
    with torch.no_grad():
        expected = m(x).double().numpy()
    outs, counts = {}, {}
    try:
        for value in (1, 0):
            knob.value = value
            before = (int(query(16)), int(query(17)))
            outs[value] = np.asarray(res.run(x))
            counts[value] = (int(query(16)) - before[0], int(query(17)) - before[1])
    finally:
        knob.value = 0
    assert counts == {1: (3, 3 if packed else 0), 0: (0, 0)}
    assert _rel(outs[1], outs[0]) <= BOUND and _rel(outs[1], expected) <= BOUND


def test_only_a_marked_module_carries_the_winograd_weights():
    """``rewrite`` packs the Winograd weights after W (meta[15] = 1, the constant 1 + 16/9 of
    W) only in a module marked by ``with_winograd_weights``; the default build's constants
    are W alone (15 meta entries)."""
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
    assert sizes == {False: (16 * 16 * 9, 15, 0), True: (16 * 16 * 9 + 16 * 16 * 16, 16, 1)}
