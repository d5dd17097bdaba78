"""smooth-quant is exact in float and makes outlier activations quantize better."""

from __future__ import annotations

import torch
import torch.nn as nn

import edgecc
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.quant import sqnr_db
from edgecc.testing import assert_close


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(32)
        self.q = nn.Linear(32, 32)
        self.k = nn.Linear(32, 32)
        self.out = nn.Linear(32, 8)
        with torch.no_grad():
            self.ln.weight[:3] = 40.0  # outlier channels, as in LLM activations

    def forward(self, x):
        h = self.ln(x)
        return self.out(torch.relu(self.q(h) + self.k(h)))


def setup():
    torch.manual_seed(0)
    cal = [(torch.randn(8, 16, 32, generator=torch.Generator().manual_seed(i)),)
           for i in range(4)]
    return edgecc.trace(Block().eval(), cal[0]), cal


def test_smoothing_is_exact_in_float_and_folds_into_the_layer_norm():
    prog, cal = setup()
    res = PassManager("smooth-quant{alpha=0.5}")(prog.copy(),
                                                  context=PassContext(calibration=cal))
    stats = res.stats["passes"][0]["stats"]
    assert stats["groups"] == 2 and stats["folded_into_norm"] == 1  # ln -> q, k
    assert stats["scale_nodes_inserted"] == 1  # relu -> out: an explicit multiply
    assert_close(prog, res.program, atol=1e-4, rtol=1e-4)


def test_smoothing_improves_w8a8():
    prog, cal = setup()
    x = torch.randn(8, 16, 32, generator=torch.Generator().manual_seed(7))
    ref = prog.run(x)[0]
    plain = PassManager("quantize{scheme=w8a8}")(prog.copy(),
                                                 context=PassContext(calibration=cal))
    smooth = PassManager("smooth-quant{alpha=0.5},quantize{scheme=w8a8}")(
        prog.copy(), context=PassContext(calibration=cal))
    assert sqnr_db(ref, smooth.program.run(x)[0]) > sqnr_db(ref, plain.program.run(x)[0]) + 3


def test_bias_correction_removes_the_mean_output_shift():
    prog, cal = setup()
    opts = "scheme=w8a16,weight_dtype=int4,weight_granularity=per-tensor"
    ctx = PassContext(calibration=cal)
    plain = PassManager(f"quantize{{{opts}}}")(prog.copy(), context=ctx).program
    corrected_res = PassManager(f"quantize{{{opts},bias_correction=true}}")(prog.copy(),
                                                                          context=ctx)
    corrected = corrected_res.program
    assert corrected_res.stats["passes"][0]["stats"]["bias_corrected"] == 3
    ref = torch.cat([prog.run(*b)[0] for b in cal])
    shift_plain = (torch.cat([plain.run(*b)[0] for b in cal]) - ref).mean(dim=(0, 1))
    shift_corr = (torch.cat([corrected.run(*b)[0] for b in cal]) - ref).mean(dim=(0, 1))
    shift_plain, shift_corr = shift_plain.abs().mean(), shift_corr.abs().mean()
    assert shift_corr < 0.7 * shift_plain  # one-shot: each layer corrects its own rounding
