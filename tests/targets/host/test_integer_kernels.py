"""Host target with integer_kernels: quantized linears as int8 matmuls on x86 (the same
lowering -t arm64 uses), equal to the fake-quant program within one quantization step."""

from __future__ import annotations

import torch
import torch.nn as nn

import edgecc
from edgecc.quant import is_quantize


def test_w8a8_linears_as_integer_matmuls(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(4, 32)
    res = edgecc.compile(model, "host", example_inputs=(x,),
                         calibration=[(torch.randn(4, 32),) for _ in range(4)],
                         pipeline="quantize{scheme=w8a8}", output_dir=str(tmp_path / "o"),
                         target_options={"integer_kernels": True})
    step = max(float(res.program.tensor(n.args[1]).max())
               for n in res.program.nodes("call_function") if is_quantize(n))
    fresh = torch.randn(4, 32)
    assert (res.run(fresh) - res.program.run(fresh)[0]).abs().max() <= step
    assert res.report["verification"]["passed"]
