"""The models the core must handle: compiled for the host, outputs within 1e-4 of PyTorch."""

import pytest
import torch

import edgecc
from tests.models import mobilenet_v2, resnet20, token_inputs, transformer

TOL = dict(atol=1e-4, rtol=1e-4)


def check(res, module, inputs):
    v = res.report["verification"]
    assert v["performed"] and v["passed"], v
    assert v["max_abs"] <= 1e-4
    with torch.no_grad():
        expected = module(*inputs)
    torch.testing.assert_close(res.run(*inputs), expected, **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("make", [resnet20, mobilenet_v2], ids=["resnet20", "mobilenet_v2"])
def test_cnns_compile_and_match(make, tmp_path):
    module = make()
    x = torch.randn(2, 3, 32, 32)
    res = edgecc.compile(module, "host", example_inputs=(x,), output_dir=str(tmp_path / "out"))
    counts = res.program.op_counts()
    assert counts["aten._native_batch_norm_legit_no_training"] == 0
    assert counts["edgecc.conv_act"] > 0
    check(res, module, (torch.randn(2, 3, 32, 32),))
    assert res.report["model"]["after"]["operators"] < res.report["model"]["before"]["operators"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_transformers_compile_and_match(name, tmp_path):
    module = transformer(name)
    inputs = token_inputs()
    res = edgecc.compile(module, "host", example_inputs=inputs, output_dir=str(tmp_path / "o"))
    counts = res.program.op_counts()
    assert counts["aten.scaled_dot_product_attention"] == 2  # one per layer, never decomposed
    check(res, module, token_inputs())
