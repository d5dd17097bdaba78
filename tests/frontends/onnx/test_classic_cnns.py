"""The classic CNN generation (``classic_cnns.py``) exported by torch.onnx at opsets 9, 10
and 11, imported and compiled for the host target: within 1e-4 of onnxruntime (error
relative to the output's magnitude), and the import check recorded in the manifest.

Every (model, opset) pair is imported with the import check on; the host target compiles
each model once, from its opset-9 export (the path through onnx's version converter, where
old attribute forms are upgraded) and from that export upgraded to opset 11 by the user.
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch

import edgecc
from edgecc.onnx_import.self_check import relative_error
from tests.frontends.onnx.classic_cnns import MODELS, OPSETS, export, upgraded

TOLERANCE = 1e-4


def _ort(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.slow
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_import_matches_onnxruntime(name, opset, tmp_path):
    path = export(name, opset, tmp_path / f"{name}.onnx")
    program = edgecc.load(path)
    check = program.graph_module.meta["edgecc.import_check"]
    assert check["passed"] and check["value"] <= TOLERANCE and "amplified" not in check
    x = torch.randn(MODELS[name][1], generator=torch.Generator().manual_seed(5))
    assert relative_error(program(x)[0], _ort(path, x)) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("via", ["opset9", "upgraded-to-11"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_host_target_matches_onnxruntime(name, via, tmp_path):
    path = export(name, 9, tmp_path / f"{name}.onnx")
    if via == "upgraded-to-11":
        path = upgraded(path, tmp_path / f"{name}_11.onnx", 11)
    res = edgecc.compile(path, "host", output_dir=str(tmp_path / "out"))
    assert res.report["import_check"]["passed"]
    assert res.report["import_check"]["onnxruntime"] == ort.__version__
    x = torch.randn(MODELS[name][1], generator=torch.Generator().manual_seed(6))
    got = np.asarray(res.run(x.numpy()))
    assert relative_error(got, _ort(path, x)) <= TOLERANCE
