"""A whole inverted residual block in one call (``edgecc_x86_sexpdw`` with the project's
arguments, x86_fp32_block; AVX-512): the fused bands run (``edgecc_x86_fp32_block_calls``
counts them: a silent fallback fails), bit-identical to the three kernels called in turn
(expand, depthwise, project + residual) and to the call's own fallback
(``edgecc_x86_fp32_block`` = 0, ``edgecc_x86_fp32_block_min_kib``), at several band heights and steps (a band taller than the map,
bands and steps not dividing it, one-row steps), stride 1 and 2, with and without the residual,
channels not a multiple of the 12-channel chunk, batch 2; within 1e-5 relative of PyTorch
float64."""

import ctypes

import numpy as np
import pytest

from edgecc.targets.tvm import lowering, x86_fp32
from tests.targets.tvm.test_x86_fp32 import _conv, _has_avx512, _torch_conv, kernels  # noqa: F401
from tests.targets.tvm.test_x86_fp32_expand_dw import _set

pytestmark = [
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
    pytest.mark.skipif(not _has_avx512(), reason="the fused bands run on AVX-512 only"),
]


def _block_calls(kernels) -> int:
    return ctypes.c_int64.in_dll(kernels[1], "edgecc_x86_fp32_block_calls").value


def _block(kernels, x, w1, b1, w2, b2, w3, b3, stride, res, bounds):
    """One edgecc_x86_sexpdw call with the project (``w1`` 1x1, or a 3x3 stem with padding
    1): (output, fused-band calls it counted)."""
    import tvm

    n, c, h, wd = x.shape
    e, p = w1.shape[0], w3.shape[0]
    oh, ow = (h + 2 - 3) // stride + 1, (wd + 2 - 3) // stride + 1
    k, pad = w1.shape[2], w1.shape[2] // 2
    meta1 = [n, c, h, wd, e, k, k, 1, 1, pad, pad, 1, 1, h, wd]
    meta2 = [n, e, h, wd, 3, 3, stride, stride, 1, 1, 1, 1, oh, ow]
    meta3 = [n, e, oh, ow, p, 1, 1, 1, 1, 0, 0, 1, 1, oh, ow]
    args = [x, w1.reshape(e, -1), b1, np.array(meta1, np.int64), np.array(bounds[0], np.float32),
            w2.reshape(e, -1), b2, np.array(meta2, np.int64), np.array(bounds[1], np.float32),
            w3.reshape(p, -1), b3, np.array(meta3, np.int64), np.array(bounds[2], np.float32)]
    if res is not None:
        args.append(res)
    out = tvm.runtime.tensor(np.zeros((n, p, oh, ow), np.float32))
    before = _block_calls(kernels)
    kernels[0].get_function("edgecc_x86_sexpdw")(
        *[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args], out)
    return out.numpy(), _block_calls(kernels) - before


# (n, c, e, p, h, w, stride, residual): MobileNetV2-224's 12 -> 72 -> 12 @224 (+res), 8 -> 48
# -> 12, 12 -> 72 -> 16 stride 2, 16 -> 96 -> 16 @112 (+res); 31 expand channels (chunks
# 12 + 12 + 7), 20 project channels (tiles 10 + 10), odd heights, batch 2
SHAPES = [(1, 12, 72, 12, 224, 224, 1, True), (1, 8, 48, 12, 224, 224, 1, False),
          (1, 12, 72, 16, 224, 224, 2, False), (1, 16, 96, 16, 112, 112, 1, True),
          (2, 8, 31, 20, 37, 48, 1, True), (2, 8, 31, 20, 37, 48, 2, False),
          (1, 5, 12, 5, 9, 32, 1, False), (1, 32, 192, 32, 56, 56, 1, True),
          (1, 48, 288, 80, 56, 56, 2, False), (2, 8, 31, 20, 13, 21, 1, True),
          (1, 8, 24, 8, 20, 20, 2, True)]
KNOBS = ((28, 8), (28, 4), (1, 0), (3, 1), (16, 16), (500, 8), (500, 0), (7, 3), (28, 5))


# a stem (3x3 expand): MobileNetV2-224's 3 -> 16 -> 8 @224, a stride-2 depthwise, batch 2
STEMS = [(1, 3, 16, 8, 224, 224, 1, False, 3), (2, 3, 16, 8, 21, 32, 1, True, 3),
         (1, 4, 28, 8, 33, 48, 2, False, 3)]


@pytest.mark.parametrize("n,c,e,p,h,w,stride,residual,k",
                         [(*s, 1) for s in SHAPES] + STEMS)
def test_fused_block_equals_the_three_kernels(kernels, n, c, e, p, h, w, stride, residual, k):
    rng = np.random.default_rng(c * e + p + h + stride)
    x = rng.standard_normal((n, c, h, w), np.float32)
    w1 = rng.standard_normal((e, c, k, k), np.float32)
    b1 = rng.standard_normal(e, np.float32)
    w2 = rng.standard_normal((e, 1, 3, 3), np.float32)
    b2 = rng.standard_normal(e, np.float32)
    w3 = rng.standard_normal((p, e, 1, 1), np.float32)
    b3 = rng.standard_normal(p, np.float32)
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    res = rng.standard_normal((n, p, oh, ow), np.float32) if residual else None
    lo3, hi3 = (-np.inf, np.inf) if residual else (-2.0, 5.0)
    bounds = ([0.0, 6.0], [-1.0, 4.0], [lo3, hi3])
    mid = _conv(kernels, x, w1, b1, pad=k // 2, lo=0.0, hi=6.0)
    dw = _conv(kernels, mid, w2, b2, stride=stride, pad=1, lo=-1.0, hi=4.0)
    three = _conv(kernels, dw, w3, b3, res=res, lo=lo3, hi=hi3)
    args = (x, w1, b1, w2, b2, w3, b3, stride, res, bounds)
    for rows, step in KNOBS:
        knobs = {"edgecc_x86_fp32_block_rows": rows, "edgecc_x86_fp32_block_step": step}
        olds = {name: _set(kernels, name, v) for name, v in knobs.items()}
        try:
            out, calls = _block(kernels, *args)
        finally:
            for name, v in olds.items():
                _set(kernels, name, v)
        assert calls == 1, (rows, step)  # the fused bands ran
        assert np.array_equal(out, three), (rows, step)
    # the fallbacks: the pair then the project (block 0), the three kernels (expand_dw 0, or
    # an expand output under edgecc_x86_fp32_block_min_kib)
    for knob, value in (("edgecc_x86_fp32_block", 0), ("edgecc_x86_fp32_expand_dw", 0),
                        ("edgecc_x86_fp32_block_min_kib", 1 << 30)):
        old = _set(kernels, knob, value)
        try:
            unfused, calls = _block(kernels, *args)
        finally:
            _set(kernels, knob, old)
        assert calls == 0 and np.array_equal(unfused, three), knob
    ref_mid = _torch_conv(x, w1, b1, 1, k // 2, lo=0.0, hi=6.0).astype(np.float32)
    ref_dw = _torch_conv(ref_mid, w2, b2, stride, 1, lo=-1.0, hi=4.0).astype(np.float32)
    ref = _torch_conv(ref_dw, w3, b3, 1, 0, res=res, lo=lo3, hi=hi3)
    assert np.abs(three - ref).max() <= 1e-5 * np.abs(ref).max()


def test_rows_wider_than_1024_run_the_fallback(kernels):
    """Maps whose rows are wider than the depthwise row kernels take run expand + depthwise +
    project through the fallback: the same output, no fused-band call counted."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 8, 3, 1040), np.float32)
    w1 = rng.standard_normal((24, 8, 1, 1), np.float32)
    b1 = rng.standard_normal(24, np.float32)
    w2 = rng.standard_normal((24, 1, 3, 3), np.float32)
    b2 = rng.standard_normal(24, np.float32)
    w3 = rng.standard_normal((8, 24, 1, 1), np.float32)
    b3 = rng.standard_normal(8, np.float32)
    mid = _conv(kernels, x, w1, b1, lo=0.0, hi=6.0)
    dw = _conv(kernels, mid, w2, b2, stride=1, pad=1, lo=0.0, hi=6.0)
    three = _conv(kernels, dw, w3, b3, res=x)
    out, calls = _block(kernels, x, w1, b1, w2, b2, w3, b3, 1, x,
                        ([0.0, 6.0], [0.0, 6.0], [-np.inf, np.inf]))
    assert calls == 0 and np.array_equal(out, three)


@pytest.mark.parametrize("width", [48, 40])
def test_the_build_fuses_the_blocks(tmp_path, monkeypatch, width):
    """With ``FUSE_BLOCK`` the rewrite folds each pair's following 1x1 (the project, + its
    residual) into the pair's call (the manifest counts 2 blocks), the library runs the fused
    bands (twice a run), and the outputs equal the pairs-only build's and the unfused build's
    bit for bit. Rows 40 wide: blocks, but no pairs alone (their kernel reads 16-pixel rows)."""
    import torch

    import edgecc
    from edgecc.targets.tvm import x86_fp32_block, x86_fp32_expand_dw
    from tests.targets.tvm.test_x86_fp32_expand_dw import _Blocks

    monkeypatch.setattr(x86_fp32_expand_dw, "MIN_BYTES", 0)  # small maps fuse too
    monkeypatch.setattr(x86_fp32_block, "MIN_BYTES", 0)
    torch.manual_seed(0)
    m = _Blocks().eval()
    x = torch.randn(1, 8, 32, width)
    outs, stats = {}, {}
    for name, fuse, block in (("none", False, False), ("pairs", True, False),
                              ("blocks", True, True)):
        monkeypatch.setattr(x86_fp32, "FUSE_EXPAND_DW", fuse)
        monkeypatch.setattr(x86_fp32, "FUSE_BLOCK", block)
        res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                             output_dir=str(tmp_path / name))
        stats[name] = res.report["lowering"]["x86_fp32"]
        res.run(x)  # loads the library
        counter = ctypes.c_int64.in_dll(ctypes.CDLL(res._runner.library),
                                        "edgecc_x86_fp32_block_calls")
        before = counter.value
        outs[name] = np.asarray(res.run(x))
        assert counter.value - before == (2 if block else 0), name
    assert stats["blocks"]["fused_block"] == 2 and stats["blocks"]["fused_expand_dw"] == 2
    assert stats["pairs"]["fused_block"] == 0 and stats["none"]["fused_expand_dw"] == 0
    assert stats["pairs"]["fused_expand_dw"] == (2 if width % 16 == 0 else 0)
    assert np.array_equal(outs["blocks"], outs["pairs"])
    assert np.array_equal(outs["blocks"], outs["none"])
    with torch.no_grad():
        ref = m(x).numpy()
    assert np.abs(outs["blocks"] - ref).max() <= 1e-5 * np.abs(ref).max()


def test_the_build_fuses_a_stem_block(tmp_path, monkeypatch):
    """A stem 3x3 (3 input channels) whose output's only user is a depthwise 3x3 followed by a
    1x1 (MobileNetV2's first block) becomes one call (the manifest counts 1 block, no pair;
    the fused bands run once a run), equal to the unfused build bit for bit."""
    import torch
    from torch import nn

    import edgecc
    from edgecc.targets.tvm import x86_fp32_block

    monkeypatch.setattr(x86_fp32_block, "STEM_MIN_BYTES", 0)  # a small map fuses too
    torch.manual_seed(0)
    clip = nn.ReLU6
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), clip(),
                      nn.Conv2d(16, 16, 3, padding=1, groups=16), clip(),
                      nn.Conv2d(16, 8, 1)).eval()
    x = torch.randn(1, 3, 24, 32)
    outs, stats = {}, {}
    for block in (False, True):
        monkeypatch.setattr(x86_fp32, "FUSE_BLOCK", block)
        res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                             output_dir=str(tmp_path / f"b{int(block)}"))
        stats[block] = res.report["lowering"]["x86_fp32"]
        res.run(x)
        counter = ctypes.c_int64.in_dll(ctypes.CDLL(res._runner.library),
                                        "edgecc_x86_fp32_block_calls")
        before = counter.value
        outs[block] = np.asarray(res.run(x))
        assert counter.value - before == int(block)
    assert stats[True]["fused_block"] == 1 and stats[False]["fused_expand_dw"] == 0
    assert np.array_equal(outs[True], outs[False])
