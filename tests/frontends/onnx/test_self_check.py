"""The ONNX import checks itself against onnxruntime (``edgecc/onnx_import/self_check.py``)."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import edgecc
from edgecc.cli import main
from edgecc.onnx_import import registry
from edgecc.onnx_import.converter import Converter
from edgecc.onnx_import.self_check import ImportCheckError, ImportCheckOptions, relative_error
from tests.frontends.onnx.onnx_files import save_graph as _save




def _conv_lrn(path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("LRN", ["c"], ["n"], name="norm1", size=5, alpha=1e-2, beta=0.75),
             helper.make_node("Relu", ["n"], ["y"], name="relu1")]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w], path)


@pytest.fixture
def broken_lrn(monkeypatch):
    """The LRN converter with its exponent dropped (beta = 1): wrong by a few percent."""
    def wrong(ctx, x):
        return F.local_response_norm(x, ctx.attr("size"), ctx.attr("alpha", 1e-4), 1.0,
                                     ctx.attr("bias", 1.0))

    entries = [c if c.op_type != "LRN" else Converter("LRN", wrong)
               for convs in registry.CONVERTERS.entries.values() for c in convs]
    monkeypatch.setattr(registry, "CONVERTERS", registry.build_table(entries))


def test_check_passes_and_is_recorded(tmp_path):
    program = edgecc.load(_conv_lrn(tmp_path / "m.onnx"))
    check = program.graph_module.meta["edgecc.import_check"]
    assert check["passed"] and check["value"] < 1e-5
    assert check["onnxruntime"] == ort.__version__ and check["samples"] == 2
    assert check["seconds"] > 0 and check["metric"] == "max_abs_err / max_abs_ref"


def test_check_names_the_node_of_a_broken_converter(tmp_path, broken_lrn):
    path = _conv_lrn(tmp_path / "m.onnx")
    with pytest.raises(ImportCheckError, match=r"node 'norm1' \(LRN\)") as info:
        edgecc.load(path)
    assert "\n" not in str(info.value) and "--no-import-check" in str(info.value)
    program = edgecc.load(path, import_check=False)  # the way around it, said in the error
    assert program.graph_module.meta["edgecc.import_check"]["skipped"].startswith("disabled")


def test_cli_refuses_a_wrong_import_and_no_import_check_skips(tmp_path, broken_lrn, capsys):
    path = _conv_lrn(tmp_path / "m.onnx")
    assert main(["inspect", path, "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "norm1" in err and "Traceback" not in err
    assert main(["inspect", path, "--json", "--no-import-check"]) == 0
    assert json.loads(capsys.readouterr().out)["import_check"]["skipped"]


def test_amplified_float_error_is_told_apart_from_a_converter_bug(tmp_path):
    """(x @ w) - sum(x * w) is zero in exact arithmetic; in float32 it is each runtime's own
    rounding noise, scaled up. Every node agrees with onnxruntime alone, so the check keeps
    the import and records the amplification instead of blaming a converter."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4096, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w.T.copy(), "wt"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.array(1e6, np.float32), "big")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
             helper.make_node("Mul", ["x", "wt"], ["p"], name="mul"),
             helper.make_node("ReduceSum", ["p", "ax"], ["b"], name="sum"),
             helper.make_node("Sub", ["a", "b"], ["d"], name="cancel"),
             helper.make_node("Mul", ["d", "big"], ["y"], name="scale")]
    path = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4096])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])], inits,
                 tmp_path / "m.onnx")
    check = edgecc.load(path, import_check=ImportCheckOptions(samples=3)) \
        .graph_module.meta["edgecc.import_check"]
    if check["value"] <= check["tolerance"]:
        pytest.skip("both runtimes happened to round alike on these inputs")
    assert check["passed"] and check["amplified"]
    assert "every node matches onnxruntime" in check["diagnosis"]


def test_relative_error_scales_with_the_reference():
    ref = np.array([1e19, -3e19, 5.0], np.float32)
    assert relative_error(torch.tensor(ref * (1 + 1e-6)), ref) < 2e-6
    assert relative_error(torch.tensor([1.0, 2.0]), np.array([1.0, 2.5])) == pytest.approx(0.2)
    assert relative_error(torch.tensor([np.inf]), np.array([1.0])) == float("inf")
    nan = np.array([np.nan, 1.0])  # sqrt of a negative input, in both runtimes
    assert relative_error(torch.tensor(nan), nan) == 0.0
    assert relative_error(torch.tensor([1, 2]), np.array([1, 3])) == float("inf")
