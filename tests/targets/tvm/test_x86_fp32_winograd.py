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
    """Knob 2 (any map size): every call counted on path 16, within BOUND of the direct path
    (knob 0, nothing counted) and of PyTorch float64, with bias, residual and ReLU fused."""
    h, w_ = (hw, hw) if isinstance(hw, int) else hw
    rng = np.random.default_rng(c * oc + h)
    x = rng.standard_normal((batch, c, h, w_), np.float32)
    w = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc, np.float32)
    res = rng.standard_normal((batch, oc, h, w_), np.float32) if residual else None
    lo = 0.0 if relu else -np.inf
    fast, n_fast = _conv_with(kernels, 2, x, w, b, pad=1, res=res, lo=lo)
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
        out, calls = _conv_with(kernels, 2, x, w, b, stride=stride, pad=1)
        assert calls == 0
        assert np.array_equal(out, _conv_with(kernels, 0, x, w, b, stride=stride, pad=1)[0])
