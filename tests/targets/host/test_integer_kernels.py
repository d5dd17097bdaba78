"""Host target with integer_kernels: quantized linears and convolutions as int8 products on
x86 (the same lowering -t arm64 uses, with the generic GEMM kernel), int32 bias and
fixed-point requantization, equal to the fake-quant program within one quantization step."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_manifest_says_the_isa_floor_and_what_this_machine_runs(tmp_path, monkeypatch):
    """``isa`` is the floor the artifact needs; ``isa_build_machine`` is the kernel the
    library's cpuid dispatch picks on this machine (asked from the built library itself)."""
    import tvm

    from edgecc.targets.tvm import x86_int8

    monkeypatch.delenv("EDGECC_X86_INT8_ISA", raising=False)
    model = nn.Sequential(nn.Linear(32, 16)).eval()
    res = edgecc.compile(model, "host", example_inputs=(torch.randn(2, 32),),
                         calibration=[(torch.randn(2, 32),) for _ in range(2)],
                         pipeline="quantize{scheme=w8a8}", output_dir=str(tmp_path / "o"),
                         target_options={"integer_kernels": True})
    integer = res.report["lowering"]["integer_kernels"]
    assert integer["isa"] == "avx2" and "cpuid" in integer["isa_at_run_time"]
    lib = tvm.runtime.load_module(str(tmp_path / "o" / "model.so"))
    picked = lib.get_function(x86_int8.ISA_QUERY, query_imports=True)()
    assert integer["isa_build_machine"] == ("avx2", "avx_vnni", "avx512_vnni")[picked]


@pytest.mark.parametrize("layer", [
    nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU6()),        # im2col, stride 2, relu6
    nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.ReLU6()),  # depthwise conv2d
    nn.Sequential(nn.Conv2d(8, 16, 3, 1, 0), nn.ReLU()),         # no padding
    nn.Sequential(nn.Conv2d(8, 16, 1)),                           # pointwise, no activation
], ids=["conv3x3-s2-relu6", "depthwise-relu6", "conv3x3-relu", "pointwise"])
def test_quantized_convolutions_run_in_integer(layer, tmp_path):
    """Each conv runs as int8 products with int32 bias and a fixed-point requantize into
    the next layer's int8 input; that tensor is within one step of the simulator's."""
    torch.manual_seed(0)
    model = nn.Sequential(*layer, nn.Conv2d(layer[0].out_channels, 4, 1)).eval()
    x = torch.randn(1, 8, 12, 12)
    res = edgecc.compile(model, "host", example_inputs=(x,),
                         calibration=[(torch.randn(1, 8, 12, 12),) for _ in range(4)],
                         pipeline="quantize{scheme=w8a8},fuse,dce",
                         output_dir=str(tmp_path / "o"),
                         target_options={"integer_kernels": True})
    integer = res.report["lowering"]["integer_kernels"]
    assert integer["integer_layers"] == 2 and integer["float_layers"] == 0
    assert integer["requantized"] == 1
    # the last layer's input went through the integer requantize: one step of it moves the
    # output by at most step · max_o Σ|w_o|
    q = [n for n in res.program.nodes("call_function") if is_quantize(n)][-1]
    step = float(res.program.tensor(q.args[1]).max())
    last = model[-1].weight.detach().abs().sum(dim=(1, 2, 3)).max().item()
    for seed in range(3):
        torch.manual_seed(seed)
        fresh = torch.randn(1, 8, 12, 12)
        assert (res.run(fresh) - res.program.run(fresh)[0]).abs().max() <= step * last + 1e-5


def test_fixed_point_multiplier():
    from edgecc.targets.tvm.integer_lowering import _fixed_point

    values = np.array([0.7, 1e-4, 0.999999999, 2.0 ** -20, 0.5])
    mantissa, shift = _fixed_point(values)
    assert np.all((mantissa >= 2 ** 30) & (mantissa < 2 ** 31))
    np.testing.assert_allclose(mantissa * 2.0 ** -shift.astype(np.float64), values,
                               rtol=2.0 ** -30)
    assert _fixed_point(np.array([1.5]))[1] is None  # >= 1: the float epilogue instead


def test_bias_joins_the_requantize_exactly(tmp_path):
    """A depthwise conv between two relu6 (sx = sy) with BN-folded weights and bias: an int32
    bias rounded to the accumulator unit sx·sw erred by up to sw/2 output steps and flipped
    ~2% of outputs (MobileNetV2 drifted 1.5 steps end to end). Carried in the 64-bit product
    domain, the integer result equals the simulator's except at exact ties."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16),
                          nn.ReLU6(), nn.Conv2d(16, 8, 1))
    with torch.no_grad():
        for bn in (model[1], model[4]):  # small running variance: large folded weights
            bn.running_var.uniform_(0.01, 0.1)
            bn.running_mean.uniform_(-1, 1)
            bn.bias.uniform_(0, 2)
    model.eval()
    x = torch.randn(1, 8, 16, 16)
    res = edgecc.compile(model, "host", example_inputs=(x,),
                         calibration=[(torch.randn(1, 8, 16, 16),) for _ in range(4)],
                         pipeline="fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                         output_dir=str(tmp_path / "o"),
                         target_options={"integer_kernels": True})
    assert res.report["lowering"]["integer_kernels"]["requantized"] == 2
    differing = total = 0
    for seed in range(3):
        torch.manual_seed(10 + seed)
        fresh = torch.randn(1, 8, 16, 16)
        diff = (res.run(fresh) - res.program.run(fresh)[0]).abs()
        differing += int((diff > 1e-4).sum())
        total += diff.numel()
    assert differing <= total * 1e-3, f"{differing} of {total} outputs differ"
