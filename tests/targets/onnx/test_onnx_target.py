import os

import onnx
import pytest
import torch

import edgecc
from tests.models import resnet20, token_inputs, transformer


def test_cnn_exports_checked_and_verified_with_dynamic_batch(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=32)
    program = edgecc.trace(resnet20(), (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    res = edgecc.compile(program, "onnx", output_dir=str(tmp_path / "o"))
    path = tmp_path / "o" / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert model.graph.input[0].name == "x"
    assert not any(n.domain.startswith("edgecc") for n in model.graph.node)
    v = res.report["verification"]
    assert v["passed"] and v["max_abs"] < 1e-4
    assert res.report["not_verified"] == []
    x = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(res.run(x), program(x)[0], atol=1e-4, rtol=1e-4)


def test_external_data_goes_to_one_side_file(tmp_path):
    import logging

    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = exporter_log.level
    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    res = edgecc.compile(m, "onnx", example_inputs=(torch.randn(2, 64),),
                         target_options={"external_data": "always"},
                         output_dir=str(tmp_path / "o"))
    assert sorted(os.listdir(tmp_path / "o")) == ["README.txt", "manifest.json", "model.onnx",
                                                  "model.onnx.data"]
    assert {a["path"] for a in res.report["artifacts"]} == {"model.onnx", "model.onnx.data",
                                                             "README.txt"}
    onnx.checker.check_model(str(tmp_path / "o" / "model.onnx"), full_check=True)
    assert res.report["verification"]["passed"]
    # the export's log filter is removed after it; torch's logger keeps its settings
    assert exporter_log.level == level and not exporter_log.filters


def test_bad_opset_is_rejected_before_work(tmp_path):
    with pytest.raises(edgecc.EdgeccError, match="opset must be between"):
        edgecc.compile(torch.nn.Linear(2, 2), "onnx", example_inputs=(torch.randn(2, 2),),
                       target_options={"opset": 9}, output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "llama"])
def test_transformers_export_and_match(name, tmp_path):
    module = transformer(name)
    res = edgecc.compile(module, "onnx", example_inputs=token_inputs(),
                         output_dir=str(tmp_path / "o"))
    assert res.report["verification"]["passed"], res.report["verification"]
    inputs = token_inputs()
    with torch.no_grad():
        torch.testing.assert_close(res.run(*inputs), module(*inputs), atol=1e-4, rtol=1e-4)
