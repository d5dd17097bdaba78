"""GPT-2's Conv1D (``addmm`` with a stored [in, out] weight) is a linear layer to quantize."""

from __future__ import annotations

import torch

import edgecc
from edgecc.passes.quantize.addmm import addmm_to_linear
from edgecc.program import op_name


class Conv1D(torch.nn.Module):
    """transformers.pytorch_utils.Conv1D's forward (without importing transformers)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = torch.nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class _Conv1DBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc, self.c_proj = Conv1D(24, 16), Conv1D(16, 24)

    def forward(self, x):
        return self.c_proj(torch.relu(self.c_fc(x)))


def _ops(program):
    return [op_name(n) for n in program.nodes("call_function")]


def test_addmm_becomes_linear_losslessly():
    torch.manual_seed(0)
    model = _Conv1DBlock().eval()
    program = edgecc.trace(model, (torch.randn(2, 5, 16),))
    assert _ops(program).count("aten.addmm") == 2
    assert addmm_to_linear(program) == 2
    assert "aten.addmm" not in _ops(program) and _ops(program).count("aten.linear") == 2
    for _ in range(2):  # fresh inputs
        x = torch.randn(2, 5, 16)
        torch.testing.assert_close(program.run(x)[0], model(x), rtol=1e-5, atol=1e-6)


def test_conv1d_is_quantized():
    torch.manual_seed(0)
    model = _Conv1DBlock().eval()
    calib = [(torch.randn(2, 5, 16),) for _ in range(4)]
    result = edgecc.PassManager("quantize{scheme=w8a8},fuse,dce")(
        edgecc.trace(model, (torch.randn(2, 5, 16),)),
        context=edgecc.PassContext(calibration=calib))
    ops = _ops(result.program)
    assert "aten.addmm" not in ops
    assert ops.count("edgecc.quantize") >= 2 and ops.count("edgecc.dequantize") >= 4, ops
