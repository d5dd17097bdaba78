"""The host target executes edgecc's quantization operators exactly as edgecc.quant defines."""

from __future__ import annotations

import pytest
import torch

import edgecc
from edgecc import quant as Q

FORMATS = ["int8", "uint8", "int4", "uint4", "float8_e4m3fn", "float8_e5m2", "float16"]


class QDQ(torch.nn.Module):
    """Activation quantize->dequantize, a stored quantized weight, and a fake-quant."""

    def __init__(self, dtype: str, granularity: str):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        fmt = Q.qformat(dtype)
        self.dtype, self.fmt = dtype, fmt
        shape, self.axis, self.block = {"tensor": ((), 0, 0), "axis": ((16,), 0, 0),
                                        "block": ((16, 4), 1, 8)}[granularity]
        self.s = torch.rand(shape, generator=g) * 0.1 + 0.02
        zp = (torch.zeros(shape) if fmt.is_float else
              torch.randint(fmt.qmin // 2, fmt.qmax // 2 + 1, shape, generator=g))
        self.z = zp.to(fmt.zero_point_dtype)
        self.wq = Q.quantize(torch.randn(16, 32, generator=g), self.s, self.z, self.axis,
                             self.block, fmt.qmin if not fmt.is_float else 0,
                             fmt.qmax if not fmt.is_float else 0, dtype)

    def forward(self, x):
        lo, hi = (0, 0) if self.fmt.is_float else (self.fmt.qmin, self.fmt.qmax)
        q = Q.quantize(x, self.s, self.z, self.axis, self.block, lo, hi, self.dtype)
        a = Q.dequantize(q, self.s, self.z, self.axis, self.block, self.dtype, torch.float32)
        w = Q.dequantize(self.wq, self.s, self.z, self.axis, self.block, self.dtype,
                         torch.float32)
        f = Q.fake_quantize(x * 0.5, self.s, self.z, self.axis, self.block, lo, hi,
                            self.dtype)
        return a * w + f


@pytest.mark.parametrize("dtype", FORMATS)
@pytest.mark.parametrize("granularity", ["tensor", "axis", "block"])
def test_host_matches_the_simulator_exactly(dtype, granularity, tmp_path):
    model = QDQ(dtype, granularity)
    x = torch.randn(16, 32) * 4
    res = edgecc.compile(model, target="host", example_inputs=(x,), pipeline="dce",
                         output_dir=str(tmp_path / "out"), verify=False)
    for seed in range(3):
        x = torch.randn(16, 32, generator=torch.Generator().manual_seed(seed)) * 4
        out = res.run(x)
        out = out[0] if isinstance(out, tuple) else out
        torch.testing.assert_close(out, model(x), rtol=0, atol=1e-6)


def test_constant_fold_keeps_quantized_weights_integer():
    model = QDQ("int4", "block")
    prog = edgecc.trace(model, (torch.randn(16, 32),))
    out = edgecc.PassManager("constant-fold,dce")(prog).program
    stored = {str(prog.tensor(n).dtype) for n in out.nodes("get_attr")}
    assert "torch.uint8" in stored
    assert out.op_counts()["edgecc.dequantize"] == 2
