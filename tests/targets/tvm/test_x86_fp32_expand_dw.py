"""An expand 1x1 convolution and the depthwise 3x3 after it in one call
(``edgecc_x86_sexpdw``, x86_fp32_expand_dw; AVX-512): the fused row bands run (path 25 counts
them: a silent fallback fails), bit-identical to the two kernels called in turn and to the
call's own unfused form (``edgecc_x86_fp32_expand_dw`` = 0), at several band heights (a band
taller than the map, bands not dividing it), steps inside a band, streamed or cached
stores, stride 1 and 2, channels not a multiple of the
12-channel chunk, batch 2; within 1e-5 relative of PyTorch float64."""

import ctypes

import numpy as np
import pytest
import torch
from torch import nn

from edgecc.targets.tvm import lowering, x86_fp32
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="the fused bands run on AVX-512 only"),
]

EXPAND_DW_PATH = 25


def _path(kernels, i: int) -> int:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    return int(kernels[0].get_function(PATH_QUERY)(i))


def _set(kernels, name: str, value: int) -> int:
    var = ctypes.c_int32.in_dll(kernels[1], name)
    old, var.value = var.value, value
    return old


def _expand_dw(kernels, x, w1, b1, w2, b2, stride, b1_bounds, b2_bounds):
    """One edgecc_x86_sexpdw call: (output, path-25 calls it counted)."""
    import tvm

    n, c, h, wd = x.shape
    e = w1.shape[0]
    oh, ow = (h + 2 - 3) // stride + 1, (wd + 2 - 3) // stride + 1
    meta1 = [n, c, h, wd, e, 1, 1, 1, 1, 0, 0, 1, 1, h, wd]
    meta2 = [n, e, h, wd, 3, 3, stride, stride, 1, 1, 1, 1, oh, ow]
    args = [x, w1.reshape(e, -1), b1, np.array(meta1, np.int64), np.array(b1_bounds, np.float32),
            w2.reshape(e, -1), b2, np.array(meta2, np.int64), np.array(b2_bounds, np.float32)]
    out = tvm.runtime.tensor(np.zeros((n, e, oh, ow), np.float32))
    before = _path(kernels, EXPAND_DW_PATH)
    kernels[0].get_function("edgecc_x86_sexpdw")(
        *[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args], out)
    return out.numpy(), _path(kernels, EXPAND_DW_PATH) - before


# (n, c, e, h, w, stride): MobileNetV2-224's 12 -> 72 @224 (s1 and s2) and 16 -> 96 @112
# shapes, 31 expand channels (chunks 12 + 12 + 7), odd heights, batch 2
SHAPES = [(1, 12, 72, 224, 224, 1), (1, 12, 72, 224, 224, 2), (1, 16, 96, 112, 112, 1),
          (2, 8, 31, 37, 48, 1), (2, 8, 31, 37, 48, 2), (1, 5, 12, 9, 32, 1)]


@pytest.mark.parametrize("n,c,e,h,w,stride", SHAPES)
def test_fused_bands_equal_the_pair(kernels, n, c, e, h, w, stride):
    rng = np.random.default_rng(c * e + h + stride)
    x = rng.standard_normal((n, c, h, w), np.float32)
    w1 = rng.standard_normal((e, c, 1, 1), np.float32)
    b1 = rng.standard_normal(e, np.float32)
    w2 = rng.standard_normal((e, 1, 3, 3), np.float32)
    b2 = rng.standard_normal(e, np.float32)
    mid = _conv(kernels, x, w1, b1, lo=0.0, hi=6.0)
    pair = _conv(kernels, mid, w2, b2, stride=stride, pad=1, lo=-1.0, hi=4.0)
    args = (x, w1, b1, w2, b2, stride, [0.0, 6.0], [-1.0, 4.0])
    for rows, step, stream in ((1, 0, 1), (3, 0, 1), (16, 0, 1), (28, 0, 1), (28, 0, 0),
                               (500, 0, 1), (16, 4, 1), (28, 3, 0)):
        knobs = {"edgecc_x86_fp32_expand_dw_rows": rows, "edgecc_x86_fp32_expand_dw_step": step,
                 "edgecc_x86_fp32_expand_dw_stream": stream}
        olds = {k: _set(kernels, k, v) for k, v in knobs.items()}
        try:
            out, calls = _expand_dw(kernels, *args)
        finally:
            for k, v in olds.items():
                _set(kernels, k, v)
        assert calls == 1, rows  # the fused bands ran
        assert np.array_equal(out, pair), (rows, step, stream)
    old = _set(kernels, "edgecc_x86_fp32_expand_dw", 0)
    try:
        unfused, calls = _expand_dw(kernels, *args)
    finally:
        _set(kernels, "edgecc_x86_fp32_expand_dw", old)
    assert calls == 0 and np.array_equal(unfused, pair)
    ref_mid = _torch_conv(x, w1, b1, 1, 0, lo=0.0, hi=6.0)
    ref = _torch_conv(ref_mid.astype(np.float32), w2, b2, stride, 1, lo=-1.0, hi=4.0)
    assert np.abs(pair - ref).max() <= 1e-5 * np.abs(ref).max()


def test_rows_not_a_multiple_of_16_run_the_pair(kernels):
    """Maps whose rows are not a multiple of 16 wide (a band's panels would span rows) run
    the unfused pair: the same output, path 25 not counted."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 20, 20), np.float32)
    w1 = rng.standard_normal((24, 8, 1, 1), np.float32)
    b1 = rng.standard_normal(24, np.float32)
    w2 = rng.standard_normal((24, 1, 3, 3), np.float32)
    b2 = rng.standard_normal(24, np.float32)
    mid = _conv(kernels, x, w1, b1, lo=0.0, hi=6.0)
    pair = _conv(kernels, mid, w2, b2, stride=1, pad=1, lo=0.0, hi=6.0)
    out, calls = _expand_dw(kernels, x, w1, b1, w2, b2, 1, [0.0, 6.0], [0.0, 6.0])
    assert calls == 0 and np.array_equal(out, pair)


class _Blocks(nn.Module):
    """Two inverted-residual heads (expand 1x1 + ReLU6, depthwise 3x3 + ReLU6, project 1x1):
    stride 1 and stride 2, and an expand whose output has a second user (not fused)."""

    def __init__(self):
        super().__init__()
        self.e1, self.p1 = nn.Conv2d(8, 36, 1), nn.Conv2d(36, 8, 1)
        self.d1 = nn.Conv2d(36, 36, 3, padding=1, groups=36)
        self.e2 = nn.Conv2d(8, 24, 1)
        self.d2 = nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24)
        self.e3, self.d3 = nn.Conv2d(24, 24, 1), nn.Conv2d(24, 24, 3, padding=1, groups=24)

    def forward(self, x):
        clip = lambda t: torch.clamp(t, 0.0, 6.0)  # noqa: E731
        y = self.p1(clip(self.d1(clip(self.e1(x))))) + x
        z = clip(self.d2(clip(self.e2(y))))
        u = clip(self.e3(z))
        return clip(self.d3(u)) + u  # e3's output has two users: two calls


def test_the_build_fuses_the_pairs(tmp_path, monkeypatch):
    """The rewrite emits one edgecc_x86_sexpdw call per expand + depthwise pair (the manifest
    counts 2; the expand with a second user stays two calls), the library runs the fused bands
    (path 25, twice a run), and the outputs equal the unfused build's bit for bit and PyTorch
    within 1e-5 relative."""
    import edgecc
    from edgecc.targets.tvm import x86_fp32_expand_dw
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    monkeypatch.setattr(x86_fp32_expand_dw, "MIN_BYTES", 0)  # small maps fuse too
    monkeypatch.setattr(x86_fp32, "FUSE_BLOCK", False)  # the pairs alone (blocks: _block tests)
    torch.manual_seed(0)
    m = _Blocks().eval()
    x = torch.randn(1, 8, 32, 48)
    outs, stats = {}, {}
    for fuse in (False, True):
        monkeypatch.setattr(x86_fp32, "FUSE_EXPAND_DW", fuse)
        res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                             output_dir=str(tmp_path / f"o{int(fuse)}"))
        stats[fuse] = res.report["lowering"]["x86_fp32"]
        res.run(x)  # loads the library
        query = res._runner.module.get_function(PATH_QUERY, query_imports=True)
        before = int(query(EXPAND_DW_PATH))
        outs[fuse] = np.asarray(res.run(x))
        runs = int(query(EXPAND_DW_PATH)) - before
        assert runs == (2 if fuse else 0), (fuse, runs)
    assert stats[True]["fused_expand_dw"] == 2 and stats[False]["fused_expand_dw"] == 0
    assert stats[True]["x86_fp32_conv"] == stats[False]["x86_fp32_conv"] == 4
    assert np.array_equal(outs[True], outs[False])
    with torch.no_grad():
        ref = m(x).numpy()
    assert np.abs(outs[True] - ref).max() <= 1e-5 * np.abs(ref).max()
