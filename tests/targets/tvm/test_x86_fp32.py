"""x86 float32 kernels (``x86_fp32``): every float32 linear / convolution of the default host
build runs on them (none silently left to TVM's loop nest), each kernel path runs where it
should (the library's path counters), and the outputs equal TVM's own kernels and PyTorch
within 1e-5 relative on fresh random inputs, on the AVX-512 and the AVX2 paths."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.targets.tvm import lowering, x86_fp32

pytestmark = pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                                reason="needs an x86 CPU with AVX2 + FMA")


class Mixed(nn.Module):
    """Odd sizes everywhere: convolutions 3x3 (stride 1 and 2), 1x1, 5x5 depthwise (the
    generic plane), 3x3 depthwise stride 1 / 2, a batched linear with M, K, N not multiples
    of a tile, ReLU / ReLU6 / none / GELU after them, a layer without bias."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 21, 3, padding=1)
        self.d1 = nn.Conv2d(21, 21, 3, padding=1, groups=21)
        self.d2 = nn.Conv2d(21, 21, 3, stride=2, padding=1, groups=21, bias=False)
        self.c2 = nn.Conv2d(21, 29, 1)
        self.d3 = nn.Conv2d(29, 29, 5, padding=2, groups=29)
        self.c3 = nn.Conv2d(29, 13, 3, stride=2, padding=1)
        self.l1 = nn.Linear(13, 37)
        self.l2 = nn.Linear(37, 19, bias=False)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = nn.functional.relu6(self.d1(y))
        y = self.c2(self.d2(y))
        y = torch.relu(self.c3(self.d3(y)))  # [n, 13, h/4, w/4]
        t = y.flatten(2).transpose(1, 2)  # [n, tokens, 13]
        h = self.l1(t)
        h = h + 0.044715 * torch.pow(h, 3.0)  # GPT-2's GELU: power -> products
        return self.l2(nn.functional.gelu(h))


SHAPE = (3, 3, 19, 23)


def test_every_float_layer_is_rewritten_with_its_epilogue():
    program = edgecc.trace(Mixed().eval(), (torch.randn(*SHAPE),))
    module, stats = x86_fp32.rewrite(lowering.to_relax(program))
    assert (stats.conv, stats.depthwise, stats.sgemm) == (3, 3, 2), stats
    assert stats.left == (), stats.left
    assert stats.fused_bias == 6 and stats.fused_clamp == 3 and stats.powers == 1, stats
    text = module["main"].script(show_meta=False)
    for op in ("R.nn.conv2d", "R.matmul", "R.nn.relu", "R.power"):
        assert op not in text
    assert text.count("edgecc_x86_s") == 8
    assert (module.attrs or {}).get("external_mods")


def test_one_row_products_are_left_to_the_gemv_schedule():
    program = edgecc.trace(nn.Linear(16, 8).eval(), (torch.randn(1, 16),))
    module, stats = x86_fp32.rewrite(lowering.to_relax(program))
    assert stats.sgemm == 0 and "GEMV" in stats.left[0]
    assert "R.matmul" in module["main"].script(show_meta=False)


def test_other_targets_are_left_untouched():
    import tvm

    program = edgecc.trace(nn.Linear(16, 8).eval(), (torch.randn(4, 16),))
    module = lowering.to_relax(program)
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                             "mattr": ["+neon"]})
    same, stats = x86_fp32.apply(module, arm)
    assert same is module and stats is None


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("isa", ["native", "avx2"])
def test_outputs_equal_tvms_kernels(tmp_path, monkeypatch, isa):
    """Same program, edgecc's build (these kernels) vs TVM's own schedule: within 1e-5 of
    the largest output, on fresh inputs (and PyTorch agrees too)."""
    if isa == "avx2":  # read when a library is loaded: AVX2 micro-kernel on this CPU
        monkeypatch.setenv("EDGECC_X86_FP32_NO_AVX512", "1")
    # other weights per ISA: an identical library would be the one already loaded (dlopen
    # returns it), whose ISA was chosen at its first load
    torch.manual_seed(0 if isa == "native" else 3)
    m = Mixed().eval()
    x = torch.randn(*SHAPE)
    built = {}
    for schedule in ("edgecc", "tvm") if isa == "native" else ("edgecc",):
        built[schedule] = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                                         target_options={"schedule": schedule},
                                         output_dir=str(tmp_path / schedule))
        assert built[schedule].report["verification"]["passed"]
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn(*SHAPE)
        with torch.no_grad():
            expected = m(fresh)
        ours = built["edgecc"].run(fresh)
        assert _relative(ours, expected) <= 1e-5
        if "tvm" in built:
            assert _relative(ours, built["tvm"].run(fresh)) <= 1e-5


def test_pack_panels_layout():
    w = np.arange(5 * 19, dtype=np.float32).reshape(5, 19)
    p = x86_fp32.pack_panels(w)
    assert p.shape == (2, 5, 16)
    assert p[1, 3, 2] == w[3, 18] and not p[1, :, 3:].any()


class Paths(nn.Module):
    """One layer per kernel path: a 3x3 and a 1x1 convolution reading their input in place
    (stride 1, 16-wide rows), a stride-2 convolution and one on 4-wide rows (im2col panels by
    gather), one on 8-wide rows (AVX-512: panels from row runs), 3x3 depthwise stride 1 / 2
    (AVX-512: 16-wide rows a row per vector, 8x8 / 4x4 outputs 16 channels per vector) and a
    5x5 one, two residual adds (+ ReLU) folded into a convolution and into a linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(5, 12, 3, padding=1)
        self.b = nn.Conv2d(12, 12, 3, padding=1)
        self.p = nn.Conv2d(12, 20, 1)
        self.d1 = nn.Conv2d(20, 20, 3, padding=1, groups=20)
        self.d2 = nn.Conv2d(20, 20, 3, stride=2, padding=1, groups=20)
        self.e = nn.Conv2d(20, 20, 3, padding=1)  # rows 8 wide: panels from row runs
        self.s = nn.Conv2d(20, 24, 3, stride=2, padding=1)  # stride 2: phase planes
        self.n = nn.Conv2d(24, 24, 3, padding=1)  # rows 4 wide: gathered panels
        self.d3 = nn.Conv2d(24, 24, 3, padding=1, groups=24)  # 4x4: 16 channels per vector
        self.d5 = nn.Conv2d(24, 24, 5, padding=2, groups=24)
        self.l1 = nn.Linear(24, 24)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y) + y)  # residual + ReLU into the conv's write-back
        y = self.e(self.d2(torch.relu(self.d1(self.p(y)))))
        z = torch.relu(self.s(y))
        z = self.d5(self.d3(self.n(z) + z))
        t = z.flatten(2).transpose(1, 2)
        return self.l1(t) + t  # residual into the linear's write-back


PATHS_SHAPE = (2, 5, 16, 16)


@pytest.mark.parametrize("isa", ["native", "avx2"])
def test_every_kernel_path_runs_and_matches(tmp_path, monkeypatch, isa):
    """No silent fallback: the manifest counts every layer on the kernels with the residuals
    folded, the library's path counters show each path ran (input read in place, gathered
    im2col panels, depthwise 3x3 / other) on the ISA asked for, and the outputs equal
    PyTorch within 1e-5 relative."""
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    if isa == "avx2":
        monkeypatch.setenv("EDGECC_X86_FP32_NO_AVX512", "1")
    torch.manual_seed(0 if isa == "native" else 3)  # a library not loaded yet (above)
    m = Paths().eval()
    x = torch.randn(*PATHS_SHAPE)
    res = edgecc.compile(m, "host", example_inputs=(x,), pipeline="",
                         output_dir=str(tmp_path / "o"))
    stats = res.report["lowering"]["x86_fp32"]
    assert (stats["x86_fp32_conv"], stats["x86_fp32_depthwise"], stats["x86_fp32_gemm"]) \
        == (6, 4, 1), stats
    assert stats["fused_residual"] == 3 and stats["left_on_tvm"] == [], stats
    res.run(x)  # loads the library
    query = res._runner.module.get_function(PATH_QUERY, query_imports=True)
    before = [int(query(i)) for i in range(20)]
    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = torch.randn(*PATHS_SHAPE)
        with torch.no_grad():
            expected = m(fresh)
        assert _relative(res.run(fresh), expected) <= 1e-5
    calls = [int(query(i)) - b for i, b in enumerate(before)]
    # per run: a, b, p in place; s (stride 2, 4-wide rows), n (4-wide rows), e (8-wide rows)
    # through im2col panels; d1, d2, d3 3x3; d5 other; with AVX-512: a, b (16-wide rows), e
    # (8), n (4) same-size 3x3 tiles (path 9, not 0 / 1) on a copy padded by rows with two
    # column masks (path 12); s (stride-2 3x3) the tiles over phase planes (path 14, not 1),
    # d1 (16-wide rows) ran the 16-lane row form in blocks of rows (path 18), d2 (stride 2, 8x8
    # output, 16-wide input) 2 output rows per vector and d3 (4x4, stride 1) flat (path 19,
    # x86_fp32_dwrows; the 16-channel tile, path 6, has no layer here).
    # (Gathered panels with AVX-512: test_im2col_panels_run_the_wide_tiles)
    # With AVX-512, b, e, n (8+ input channels, even maps) run Winograd F(2x2, 3x3) by default
    # (path 16), on weights packed once into the library's cache (path 17), a stays on 9 / 12.
    avx512 = 0 if isa == "avx2" else int(_has_avx512())
    assert calls == [2 * (3 - 2 * avx512), 2 * (3 - 3 * avx512), 2 * 3, 2 * 1, 2 * avx512, 0,
                     0, 0, 0, 2 * avx512, 0, 0, 2 * avx512,
                     0, 2 * avx512, 0, 2 * 3 * avx512, 2 * 3 * avx512, 2 * avx512,
                     2 * 2 * avx512], calls
    assert int(query(-1)) == avx512


def _has_avx512() -> bool:
    with open("/proc/cpuinfo") as f:
        return " avx512f" in f.read()


# ---- the kernels called directly (no model build): a library of their own ----------------

@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """(TVM module, ctypes handle) of the fp32 kernels linked alone from their cached object:
    its own path counters and knobs, the ISA this CPU has; ``edgecc_x86_fp32_winograd`` set to
    0 (the direct paths these tests check; the Winograd tests set it per call)."""
    import ctypes
    import os
    import subprocess

    import tvm

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_fp32_source import SOURCE

    obj = x86_int8.compiled_object(source=SOURCE, cache=x86_fp32.CACHE)
    so = str(tmp_path_factory.mktemp("fp32_kernels") / "kernels.so")
    subprocess.run([os.environ.get("CXX", "g++"), "-shared", obj, "-o", so], check=True)
    handle = ctypes.CDLL(so)
    ctypes.c_int32.in_dll(handle, "edgecc_x86_fp32_winograd").value = 0
    return tvm.runtime.load_module(so), handle


def _conv(kernels, x, w, b, stride=1, pad=0, res=None, lo=-np.inf, hi=np.inf):
    """edgecc_x86_sconv (groups 1) or, for w [C, 1, KH, KW], edgecc_x86_sdwconv on ``x``."""
    import tvm

    lib, _ = kernels
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    geometry = [kh, kw, stride, stride, pad, pad, 1, 1, oh, ow]
    depthwise = w.shape[1] == 1 and oc == c and c > 1
    meta = [n, c, h, wd, *geometry] if depthwise else [n, c, h, wd, oc, *geometry]
    args = [x, w.reshape(oc, -1), b, np.array(meta, np.int64), np.array([lo, hi], np.float32)]
    if res is not None:
        args.append(res)
    out = tvm.runtime.tensor(np.zeros((n, oc, oh, ow), np.float32))
    fn = lib.get_function("edgecc_x86_sdwconv" if depthwise else "edgecc_x86_sconv")
    fn(*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args], out)
    return out.numpy()


def _calls(kernels) -> list[int]:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    query = kernels[0].get_function(PATH_QUERY)
    return [int(query(i)) for i in range(16)]


def _torch_conv(x, w, b, stride, pad, res=None, lo=-np.inf, hi=np.inf):
    groups = x.shape[1] if w.shape[1] == 1 and w.shape[0] == x.shape[1] else 1
    y = nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                             torch.from_numpy(b).double(), stride, pad, groups=groups)
    if res is not None:
        y = y + torch.from_numpy(res).double()
    return y.clamp(lo, hi).numpy()


def _knob(kernels, name: str, value: int) -> int:
    import ctypes

    var = ctypes.c_int64.in_dll(kernels[1], name)
    old, var.value = var.value, value
    return old


def _conv_per_knob(kernels, name: str, values, x, w, b, **conv):
    """``_conv`` once with the knob ``name`` at each of ``values`` (restored after): the
    outputs and, per run, how many calls each path counted."""
    outs, calls = [], []
    for value in values:
        old = _knob(kernels, name, value)
        try:
            before = _calls(kernels)
            outs.append(_conv(kernels, x, w, b, **conv))
            calls.append([a - b for a, b in zip(_calls(kernels), before)])
        finally:
            _knob(kernels, name, old)
    return outs, calls


@pytest.mark.parametrize("hw", [(64, 64), (61, 67)])
def test_large_map_convolution_prefetches_with_the_same_sums(kernels, hw):
    """A 1x1 convolution whose input + output reach ``edgecc_x86_fp32_prefetch_bytes``
    (1 MiB) prefetches the next panel group's lines (path 7, AVX-512; 61x67: a partial last
    panel): bit-identical to the same call with the knob off, within 1e-5 of PyTorch."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 48, *hw), np.float32)  # (48 + 24) * 4087 * 4 >= 1 MiB
    w = rng.standard_normal((24, 48, 1, 1), np.float32)
    b = rng.standard_normal(24, np.float32)
    res = rng.standard_normal((1, 24, *hw), np.float32)
    outs, calls = [], []
    for knob in (None, "edgecc_x86_fp32_prefetch_bytes"):
        before = _calls(kernels)
        old = _knob(kernels, knob, 1 << 62) if knob else None
        try:
            outs.append(_conv(kernels, x, w, b, res=res, lo=0.0))
        finally:
            if knob:
                _knob(kernels, knob, old)
        calls.append([a - b for a, b in zip(_calls(kernels), before)])
    assert [(c[0], c[7]) for c in calls] == [(1, int(_has_avx512())), (1, 0)], calls
    assert np.array_equal(outs[0], outs[1])
    ref = _torch_conv(x, w, b, 1, 0, res, lo=0.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_channels_tile_equals_the_row_form(kernels, stride):
    """Small depthwise planes run 16 channels per vector (transposed in and out of a
    channels-last tile; path 6, AVX-512): 37 channels (a partial group), a 7x5 plane (a
    partial block of 16 pixels), batch 2; bit-identical to the row-per-vector form
    (``edgecc_x86_fp32_dw_channels_width`` 0), within 1e-5 of PyTorch."""
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((2, 37, 7, 5), np.float32)
    w = rng.standard_normal((37, 1, 3, 3), np.float32)
    b = rng.standard_normal(37, np.float32)
    import ctypes

    flat = ctypes.c_int32.in_dll(kernels[1], "edgecc_x86_fp32_dw_flat")  # stride 1: the tile
    flat_old, flat.value = flat.value, 0
    before = _calls(kernels)
    tile = _conv(kernels, x, w, b, stride=stride, pad=1, lo=-1.0, hi=2.0)
    flat.value = flat_old
    mid = _calls(kernels)
    old = _knob(kernels, "edgecc_x86_fp32_dw_channels_width", 0)
    try:
        rows = _conv(kernels, x, w, b, stride=stride, pad=1, lo=-1.0, hi=2.0)
    finally:
        _knob(kernels, "edgecc_x86_fp32_dw_channels_width", old)
    after = _calls(kernels)
    avx512 = int(_has_avx512())
    assert (mid[6] - before[6], after[6] - mid[6], after[4] - mid[4]) == (avx512, 0, avx512)
    assert np.array_equal(tile, rows)
    ref = _torch_conv(x, w, b, stride, 1, lo=-1.0, hi=2.0)
    assert np.abs(tile - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("stride,hw,k,pad", [(1, (8, 8), 3, 1), (2, (15, 13), 3, 1),
                                              (1, (7, 9), 5, 2), (2, (16, 16), 3, 1)])
def test_padded_convolution_reads_the_unpadded_input(kernels, stride, hw, k, pad):
    """Padded convolutions through row-run panels (AVX-512, stride 1 / 2, output rows 5+
    wide) build their panels from the unpadded input with masked loads (path 8; no padded
    copy): 8x8 (ResNet-20's 64-channel maps), odd planes (a partial last panel), a 5x5
    kernel with pad 2, batch 2, a residual; bit-identical to the padded copy
    (``edgecc_x86_fp32_unpadded`` 0), within 1e-5 of PyTorch."""
    rng = np.random.default_rng(stride + k)
    x = rng.standard_normal((2, 6, *hw), np.float32)
    w = rng.standard_normal((20, 6, k, k), np.float32)
    b = rng.standard_normal(20, np.float32)
    oh, ow = ((s + 2 * pad - k) // stride + 1 for s in hw)
    res = rng.standard_normal((2, 20, oh, ow), np.float32)
    same = _knob(kernels, "edgecc_x86_fp32_same3x3", 0)  # 8x8 3x3: path 9 otherwise
    phases = _knob(kernels, "edgecc_x86_fp32_s2_phases", 0)  # stride-2 3x3: path 14 otherwise
    try:
        before = _calls(kernels)
        direct = _conv(kernels, x, w, b, stride=stride, pad=pad, res=res, lo=-1.0)
        mid = _calls(kernels)
        old = _knob(kernels, "edgecc_x86_fp32_unpadded", 0)
        try:
            copied = _conv(kernels, x, w, b, stride=stride, pad=pad, res=res, lo=-1.0)
        finally:
            _knob(kernels, "edgecc_x86_fp32_unpadded", old)
        after = _calls(kernels)
    finally:
        _knob(kernels, "edgecc_x86_fp32_same3x3", same)
        _knob(kernels, "edgecc_x86_fp32_s2_phases", phases)
    avx512 = int(_has_avx512())
    assert (mid[8] - before[8], after[8] - mid[8], mid[5] - before[5]) == (avx512, 0, avx512)
    assert np.array_equal(direct, copied)
    ref = _torch_conv(x, w, b, stride, pad, res, lo=-1.0)
    assert np.abs(direct - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("c,hw,batch", [(10, (6, 12), 2), (12, (5, 24), 1), (3, (32, 32), 1),
                                        (6, (7, 9), 2), (20, (8, 8), 2), (4, (1, 1), 1)])
def test_same_size_3x3_reads_the_input_in_place(kernels, c, hw, batch):
    """Same-size 3x3 convolutions (stride 1, pad 1) on rows not a multiple of 16 wide read
    the unpadded input in place with masked loads (path 9, AVX-512; not 0 / 1), those on rows
    a multiple of 16 wide a padded copy (the 3-channel stem, 32-wide: test below): 12- and
    24-wide rows, odd
    planes (panels spanning rows, a partial last panel); rows 8 or 1 wide (a 1x1 plane: every
    tap but the centre padding) take the column masks (test below), the same check here;
    37 output channels (a partial micro-tile), batch 2, a residual + clamp;
    bit-identical to the paths it replaces (``edgecc_x86_fp32_same3x3`` 0: the padded copy
    or im2col panels, the same sums in the same order), within 1e-5 of PyTorch."""
    rng = np.random.default_rng(c + hw[0])
    x = rng.standard_normal((batch, c, *hw), np.float32)
    w = rng.standard_normal((37, c, 3, 3), np.float32)
    b = rng.standard_normal(37, np.float32)
    res = rng.standard_normal((batch, 37, *hw), np.float32)
    before = _calls(kernels)
    direct = _conv(kernels, x, w, b, pad=1, res=res, lo=-1.0, hi=3.0)
    mid = _calls(kernels)
    old = _knob(kernels, "edgecc_x86_fp32_same3x3", 0)
    try:
        other = _conv(kernels, x, w, b, pad=1, res=res, lo=-1.0, hi=3.0)
    finally:
        _knob(kernels, "edgecc_x86_fp32_same3x3", old)
    after = _calls(kernels)
    avx512 = int(_has_avx512())
    new = [m - b for m, b in zip(mid, before)]
    assert (new[9], new[0] + new[1], after[9] - mid[9]) == (avx512, 1 - avx512, 0), new
    assert np.array_equal(direct, other)
    ref = _torch_conv(x, w, b, 1, 1, res, lo=-1.0, hi=3.0)
    assert np.abs(direct - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("hw", [(32, 32), (20, 48), (9, 224)])
def test_few_channel_stem_reads_a_padded_copy(kernels, hw):
    """A 3-channel same-size 3x3 (a CNN's stem) on rows a multiple of 16 wide reads a padded
    copy (paths 9 + 10), not the per-panel masks (``edgecc_x86_fp32_same3x3`` 5, the form
    before: path 9 alone), bit-identical to those, within 1e-5 of PyTorch."""
    if not _has_avx512():
        pytest.skip("the 6 x 64 tiles run on AVX-512 only")
    rng = np.random.default_rng(hw[1])
    x = rng.standard_normal((1, 3, *hw), np.float32)
    w = rng.standard_normal((16, 3, 3, 3), np.float32)
    b = rng.standard_normal(16, np.float32)
    outs, calls = _conv_per_knob(kernels, "edgecc_x86_fp32_same3x3", (1, 5), x, w, b, pad=1,
                                 lo=0.0, hi=6.0)
    assert [(c[9], c[10]) for c in calls] == [(1, 1), (1, 0)]
    assert np.array_equal(outs[0], outs[1])
    ref = _torch_conv(x, w, b, 1, 1, lo=0.0, hi=6.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("c,hw,batch,knob", [(16, (32, 32), 1, 1), (12, (16, 48), 2, 1),
                                             (16, (32, 32), 1, 2), (9, (8, 16), 2, 2)])
def test_same_size_3x3_tiles_on_16_wide_rows(kernels, c, hw, batch, knob):
    """Same-size 3x3 convolutions on rows a multiple of 16 wide with 8+ input channels run the
    6 x 64 tiles on a padded copy (paths 9 + 10; ResNet-20's 16->16 @32, 32->32 @16; 16x48:
    a group spanning rows, batch 2), or with knob 2 the masked loads (path 9 alone): 37
    output channels, a residual + clamp; bit-identical to the in-place path (knob 0), within
    1e-5 of PyTorch."""
    rng = np.random.default_rng(c * hw[1])
    x = rng.standard_normal((batch, c, *hw), np.float32)
    w = rng.standard_normal((37, c, 3, 3), np.float32)
    b = rng.standard_normal(37, np.float32)
    res = rng.standard_normal((batch, 37, *hw), np.float32)
    old = _knob(kernels, "edgecc_x86_fp32_same3x3", knob)
    try:
        before = _calls(kernels)
        tiles = _conv(kernels, x, w, b, pad=1, res=res, lo=-1.0, hi=3.0)
        mid = _calls(kernels)
        _knob(kernels, "edgecc_x86_fp32_same3x3", 0)
        in_place = _conv(kernels, x, w, b, pad=1, res=res, lo=-1.0, hi=3.0)
        after = _calls(kernels)
    finally:
        _knob(kernels, "edgecc_x86_fp32_same3x3", old)
    avx512 = int(_has_avx512())
    new = [m - b for m, b in zip(mid, before)]
    padded = int(knob == 1) * avx512
    assert (new[9], new[10], new[0], after[0] - mid[0], after[9] - mid[9]) \
        == (avx512, padded, 1 - avx512, 1, 0), new
    assert np.array_equal(tiles, in_place)
    ref = _torch_conv(x, w, b, 1, 1, res, lo=-1.0, hi=3.0)
    assert np.abs(tiles - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("stride,hw,k,pad,batch", [(2, (32, 32), 3, 1, 1), (2, (16, 16), 3, 1, 2),
                                                   (2, (32, 32), 1, 0, 1), (2, (29, 31), 3, 1, 1),
                                                   (1, (13, 11), 5, 2, 2), (2, (8, 7), 3, 1, 1)])
def test_im2col_panels_run_the_wide_tiles(kernels, stride, hw, k, pad, batch):
    """Convolutions through im2col panels (AVX-512, 2+ groups of 4 panels) multiply them in
    the 6 x 64 tiles (path 11): ResNet-20's stride-2 3x3 16->32 @32 and 1x1 stride 2, odd
    planes (a partial last group and panel), a 5x5 (row-run panels), batch 2; 8x8 and 4x4
    outputs (4 panels / 1: the 12 x 32 GEMM, path 11 not taken; 32->64 @16 stride 2 is the
    8x8), 37 output channels, a residual + clamp; stride-2 3x3 with the phase planes off
    (``edgecc_x86_fp32_s2_phases`` 0: path 14 otherwise);
    bit-identical to the 12 x 32 GEMM (``edgecc_x86_fp32_im2col_tiles`` 0), within 1e-5 of
    PyTorch."""
    rng = np.random.default_rng(stride * 100 + hw[0] + k)
    x = rng.standard_normal((batch, 12, *hw), np.float32)
    w = rng.standard_normal((37, 12, k, k), np.float32)
    b = rng.standard_normal(37, np.float32)
    oh, ow = ((s + 2 * pad - k) // stride + 1 for s in hw)
    res = rng.standard_normal((batch, 37, oh, ow), np.float32)
    phases = _knob(kernels, "edgecc_x86_fp32_s2_phases", 0)
    try:
        before = _calls(kernels)
        tiles = _conv(kernels, x, w, b, stride=stride, pad=pad, res=res, lo=-1.0, hi=3.0)
        mid = _calls(kernels)
        old = _knob(kernels, "edgecc_x86_fp32_im2col_tiles", 0)
        try:
            gemm = _conv(kernels, x, w, b, stride=stride, pad=pad, res=res, lo=-1.0, hi=3.0)
        finally:
            _knob(kernels, "edgecc_x86_fp32_im2col_tiles", old)
        after = _calls(kernels)
    finally:
        _knob(kernels, "edgecc_x86_fp32_s2_phases", phases)
    wide = int(_has_avx512() and oh * ow > 7 * 16)
    assert (mid[11] - before[11], mid[1] - before[1], after[11] - mid[11]) == (wide, 1, 0)
    assert np.array_equal(tiles, gemm)
    ref = _torch_conv(x, w, b, stride, pad, res, lo=-1.0, hi=3.0)
    assert np.abs(tiles - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("c,hw,batch", [(64, (8, 8), 1), (20, (7, 8), 2), (24, (4, 4), 1),
                                        (5, (16, 16), 1), (32, (3, 16), 2), (6, (5, 2), 1),
                                        (7, (3, 1), 1)])
def test_same_size_3x3_column_masks_on_narrow_rows(kernels, c, hw, batch):
    """Same-size 3x3 convolutions on rows 1, 2, 4, 8 or 16 wide (every panel starts a row)
    read a copy padded by rows only, with two column masks for the whole loop (paths 9 +
    12): ResNet-20's 64->64 @8 and 32->32-like 16-wide rows, 7 rows of 8 (a partial last
    panel), batch 2, 37 output channels, a residual + clamp; bit-identical to the per-panel
    masks / padded copy (``edgecc_x86_fp32_same3x3`` 4) and to the in-place / im2col paths
    (0), within 1e-5 of PyTorch."""
    rng = np.random.default_rng(c * 7 + hw[0])
    x = rng.standard_normal((batch, c, *hw), np.float32)
    w = rng.standard_normal((37, c, 3, 3), np.float32)
    b = rng.standard_normal(37, np.float32)
    res = rng.standard_normal((batch, 37, *hw), np.float32)
    outs, calls = _conv_per_knob(kernels, "edgecc_x86_fp32_same3x3", (1, 4, 0), x, w, b,
                                 pad=1, res=res, lo=-1.0, hi=3.0)
    avx512 = int(_has_avx512())
    assert [(cl[9], cl[12]) for cl in calls] == [(avx512, avx512), (avx512, 0), (0, 0)], calls
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    ref = _torch_conv(x, w, b, 1, 1, res, lo=-1.0, hi=3.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("c,hw,batch", [(16, (32, 32), 1), (32, (16, 16), 1), (64, (8, 8), 2),
                                        (12, (16, 48), 2), (128, (7, 8), 1), (120, (3, 16), 1)])
def test_same_size_3x3_tasks_copy_their_own_rows(kernels, c, hw, batch):
    """Same-size 3x3 convolutions through a padded copy (paths 10 / 12) of 2^16+ work units
    (8 a float): each pool task copies the padded rows its tiles read, in the tiles' job
    (path 13; ResNet-20's 16->16 @32, 32->32 @16; a group spanning rows, batch 2, 7 rows of 8,
    3 rows of 16, a residual + clamp); 64->64 @8 (smaller) keeps the shared copy. Bit-identical
    to the shared copy (``edgecc_x86_fp32_same3x3_window`` 0), within 1e-5 of PyTorch."""
    rng = np.random.default_rng(c * 5 + hw[1])
    x = rng.standard_normal((batch, c, *hw), np.float32)
    w = rng.standard_normal((37, c, 3, 3), np.float32) / np.float32(np.sqrt(9 * c))  # sums ~1
    b = rng.standard_normal(37, np.float32)
    res = rng.standard_normal((batch, 37, *hw), np.float32)
    outs, calls = _conv_per_knob(kernels, "edgecc_x86_fp32_same3x3_window", (1, 0), x, w, b,
                                 pad=1, res=res, lo=-1.0, hi=3.0)
    avx512 = int(_has_avx512())
    copied = avx512 * (calls[0][10] + calls[0][12])
    wp = hw[1] + 2 * int(16 % hw[1] != 0)  # rows 1, 2, 4, 8, 16 wide: padded by rows only
    window = avx512 * int(c * (hw[0] + 2) * wp * 8 >= 1 << 16)
    assert (copied, calls[0][13], calls[1][13]) == (avx512, window, 0), calls
    assert np.array_equal(outs[0], outs[1])
    ref = _torch_conv(x, w, b, 1, 1, res, lo=-1.0, hi=3.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("c,hw,oc,batch,k", [(32, (16, 16), 64, 1, 3), (32, (16, 16), 64, 2, 1),
                                             (5, (7, 9), 37, 2, 3), (3, (3, 3), 7, 1, 3),
                                             (16, (32, 32), 32, 1, 3)])
def test_stride2_map_of_one_panel_group_splits_in_halves(kernels, c, hw, oc, batch, k):
    """A stride-2 map of 2-4 panels (one group of the 6 x 64 tiles) on 2+ threads runs as two
    groups of half the panels (path 26), each pool thread building its own rows once a call:
    ResNet-20's 32->64 @16 and its 1x1 shortcut, a partial panel (20 pixels), batch 2;
    bit-identical to one group (``edgecc_x86_fp32_s2_halves`` 0, or one pool thread), within
    1e-5 of PyTorch. A map of 1 panel (2x2) or of 4+ groups (16x16 out) never halves."""
    import ctypes

    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    rng = np.random.default_rng(c + hw[1] + oc + k)
    x = rng.standard_normal((batch, c, *hw), np.float32)
    w = rng.standard_normal((oc, c, k, k), np.float32) / np.float32(np.sqrt(k * k * c))
    b = rng.standard_normal(oc, np.float32)
    oh, ow = (hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1
    res = rng.standard_normal((batch, oc, oh, ow), np.float32)
    query = kernels[0].get_function(PATH_QUERY)
    # two pool threads even where the suite runs one per worker (CI), then one
    threads = ctypes.c_int32.in_dll(kernels[1], "edgecc_pool_threads")
    default_threads = threads.value
    halves, outs = [], []
    try:
        for pool, value in ((2, 1), (2, 0), (1, 1)):
            threads.value = pool
            before = int(query(26))
            outs += _conv_per_knob(kernels, "edgecc_x86_fp32_s2_halves", (value,), x, w, b,
                                   stride=2, pad=k // 2, res=res, lo=-1.0, hi=3.0)[0]
            halves.append(int(query(26)) - before)
    finally:
        threads.value = default_threads
    panels = (oh * ow + 15) // 16
    assert halves == [int(_has_avx512() and 2 <= panels <= 4), 0, 0]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    ref = _torch_conv(x, w, b, 2, k // 2, res, lo=-1.0, hi=3.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("c,hw,oc,batch,k", [(16, (32, 32), 32, 1, 3), (32, (16, 16), 64, 1, 3),
                                             (5, (7, 9), 37, 2, 3), (8, (40, 40), 20, 1, 3),
                                             (3, (3, 3), 7, 1, 3), (24, (1, 5), 12, 2, 3),
                                             (16, (33, 18), 16, 1, 3), (16, (32, 32), 32, 1, 1),
                                             (32, (16, 16), 64, 2, 1), (7, (15, 41), 37, 1, 1)])
def test_stride2_3x3_reads_phase_planes(kernels, c, hw, oc, batch, k):
    """Stride-2 3x3 convolutions (pad 1) run the 6 x 64 tiles over phase planes of the input
    (path 14), 1x1 stride-2 ones (no pad) over a copy of its even rows and columns (path 15):
    ResNet-20's 16->32 @32 (4 panel groups: each task copies its rows), 32->64 @16 (one
    group: one copy) and shortcuts, odd sizes (a partial panel, rows past the map), rows 20
    or 21 wide (two vectors a row), 1-row maps, batch 2, a residual + clamp; bit-identical to
    the im2col paths (``edgecc_x86_fp32_s2_phases`` 0), within 1e-5 of PyTorch."""
    rng = np.random.default_rng(c * 3 + hw[0] + oc + k)
    x = rng.standard_normal((batch, c, *hw), np.float32)
    w = rng.standard_normal((oc, c, k, k), np.float32) / np.float32(np.sqrt(k * k * c))
    b = rng.standard_normal(oc, np.float32)
    oh, ow = (hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1
    res = rng.standard_normal((batch, oc, oh, ow), np.float32)
    outs, calls = _conv_per_knob(kernels, "edgecc_x86_fp32_s2_phases", (1, 0), x, w, b,
                                 stride=2, pad=k // 2, res=res, lo=-1.0, hi=3.0)
    avx512 = int(_has_avx512())
    path = 14 if k == 3 else 15
    assert [(cl[path], cl[29 - path], cl[1]) for cl in calls] \
        == [(avx512, 0, 1 - avx512), (0, 0, 1)], calls
    assert np.array_equal(outs[0], outs[1])
    ref = _torch_conv(x, w, b, 2, k // 2, res, lo=-1.0, hi=3.0)
    assert np.abs(outs[0] - ref).max() <= 1e-5 * np.abs(ref).max()
