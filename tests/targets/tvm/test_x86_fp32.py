"""x86 float32 kernels (``x86_fp32``): every float32 linear / convolution of the default host
build runs on them (none silently left to TVM's loop nest), and the outputs equal TVM's own
kernels within 1e-5 relative on fresh random inputs, on the AVX-512 and the AVX2 paths."""

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
    torch.manual_seed(0)
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
