"""-t arm64 with w8a8 programs: integer matmuls (sdot on +dotprod cores, none on the
Cortex-A53), run under qemu and compared with edgecc's fake-quant program."""

from __future__ import annotations

import subprocess
import warnings

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.quant import is_quantize
from edgecc.recipe import VerifyOptions
from tests.models import mobilenet_v2, resnet20, token_inputs, transformer


def instructions(path: str) -> dict[str, int]:
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", path], capture_output=True,
                         text=True, check=True).stdout
    return {op: dis.count(f"\t{op}\t") for op in ("sdot", "udot", "smmla")}


def largest_step(program) -> float:
    """The largest activation quantization step in the program (one 'quantization step')."""
    return max(float(program.tensor(n.args[1]).max()) for n in program.nodes("call_function")
               if is_quantize(n))


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.GELU(),
                         nn.Linear(128, 16)).eval()


def build_int8(model, inputs, calib, tmp_path, preset, pipeline="quantize{scheme=w8a8},fuse,dce"):
    return edgecc.compile(model, "arm64", example_inputs=inputs, calibration=calib,
                          pipeline=pipeline, target_options={"preset": preset},
                          output_dir=str(tmp_path / preset),
                          verify_options=VerifyOptions(samples=1))


@pytest.mark.parametrize("preset,expect_sdot", [("cortex-a76", True), ("cortex-a53", False)])
def test_int8_mlp_uses_sdot_only_where_the_core_has_it(preset, expect_sdot, qemu, tmp_path):
    x = torch.randn(8, 64)
    calib = [(torch.randn(8, 64),) for _ in range(4)]
    res = build_int8(mlp(), (x,), calib, tmp_path, preset)
    assert res.report["verification"]["passed"]
    found = instructions(f"{res.output_dir}/model.so")
    if expect_sdot:
        assert found["sdot"] > 0
    else:
        assert found["sdot"] == found["udot"] == found["smmla"] == 0
    diff = res.report["verification"]["max_abs"]  # qemu vs the fake-quant program
    print(f"{preset}: {found}, max |qemu - fake-quant| {diff:.2e} "
          f"(one step {largest_step(res.program):.2e})")
    assert diff <= largest_step(res.program)


@pytest.mark.slow
def test_int8_bert_under_qemu_matches_fake_quant(qemu, tmp_path):
    inputs = token_inputs()
    calib = [token_inputs() for _ in range(4)]
    res = build_int8(transformer("bert"), inputs, calib, tmp_path, "cortex-a76")
    assert instructions(f"{res.output_dir}/model.so")["sdot"] > 0
    assert res.report["verification"]["passed"]
    diff = res.report["verification"]["max_abs"]  # qemu vs the fake-quant program
    print(f"bert w8a8 on cortex-a76: {res.report['lowering']['integer_kernels']}, "
          f"max |qemu - fake-quant| {diff:.2e}")
    assert diff <= largest_step(res.program)


@pytest.mark.parametrize("make,preset,instruction",
                         [(resnet20, "neoverse-v1", "smmla"),
                          pytest.param(mobilenet_v2, "cortex-a76", "sdot",
                                       marks=pytest.mark.slow)],
                         ids=["resnet20-i8mm", "mobilenet_v2-dotprod"])
def test_int8_cnn_integer_kernels_under_qemu(make, preset, instruction, qemu, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    calib = [(torch.randn(1, 3, 32, 32),) for _ in range(8)]
    res = build_int8(make(), (x,), calib, tmp_path, preset,
                     pipeline="fold-batchnorm,quantize{scheme=w8a8},fuse,dce")
    integer = res.report["lowering"]["integer_kernels"]
    found = instructions(f"{res.output_dir}/model.so")
    verification = res.report["verification"]
    print(f"{make.__name__} w8a8 on {preset}: {integer}, {found}, max |qemu - fake-quant| "
          f"{verification['max_abs']:.2e} (one step {largest_step(res.program):.2e}), "
          f"cosine {verification['cosine']:.5f}")
    assert integer["float_layers"] == 0 and integer["integer_layers"] > 20
    assert integer["requantized"] > 5  # int32 bias + fixed-point requantize into the next q
    assert found[instruction] > 0
    assert verification["passed"]
    assert verification["max_abs"] <= largest_step(res.program)


def test_layers_without_an_integer_kernel_fall_back_to_float_with_a_warning(tmp_path):
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 36, 4))
    x = torch.randn(1, 4, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = edgecc.compile(model.eval(), "arm64", example_inputs=(x,), calibration=[(x,)],
                             pipeline="quantize{scheme=w8a8}", verify=False,
                             output_dir=str(tmp_path / "out"))
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("convolution: quantized convolution runs in float (grouped (2 "
                            "groups, not depthwise))") for m in messages), messages
    integer = res.report["lowering"]["integer_kernels"]
    assert integer["float_layers"] == 1 and integer["integer_layers"] == 1  # the linear
    assert instructions(f"{res.output_dir}/model.so")["sdot"] == 0  # generic: no dotprod
