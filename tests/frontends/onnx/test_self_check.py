"""The ONNX import checks itself against onnxruntime (``edgecc/onnx_import/self_check.py``),
and one regression test per importer bug the classic-CNN corpus found."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import edgecc
from edgecc.cli import main
from edgecc.onnx_import import registry
from edgecc.onnx_import.converter import Converter, numpy_to_torch
from edgecc.onnx_import.self_check import ImportCheckError, ImportCheckOptions, relative_error


def _save(nodes, inputs, outputs, inits, path, opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


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
    assert relative_error(torch.tensor([1, 2]), np.array([1, 3])) == float("inf")


# -- regressions: one per bug the classic-CNN corpus found ------------------------------------

@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_average_pool_asymmetric_pads_exclude_the_pads(tmp_path, ceil_mode):
    """Bug: AveragePool with begin != end pads applied them up front and then counted them
    (count_include_pad forced on), though count_include_pad=0 says to divide by the real
    inputs only. torch.onnx writes ceil-mode average pools this way at opset 9 (no
    ceil_mode attribute there): GoogLeNet's and Inception-v2's were 1.5% and 5% off."""
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[5, 5],
                            strides=[3, 3], pads=[0, 1, 3, 2], ceil_mode=ceil_mode)
    path = _save([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 11, 11])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [],
                 tmp_path / "m.onnx", opset=11)
    program = edgecc.load(path, import_check=False)
    x = np.random.default_rng(2).standard_normal((1, 2, 11, 11)).astype(np.float32)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert relative_error(program(torch.from_numpy(x))[0], ref) < 1e-6


def test_scalar_constant_stays_a_scalar(tmp_path):
    """Bug: numpy_to_torch used np.ascontiguousarray, which makes a 0-d array 1-d, so a
    Gather by a scalar Constant index kept the axis it must drop (torch.onnx's opset-11
    LocalResponseNorm: Shape -> Gather(scalar) -> Unsqueeze -> Concat failed to import)."""
    assert numpy_to_torch(np.array(3, np.int64)).dim() == 0
    const = helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(np.array(1, np.int64)))
    gather = helper.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=1)
    path = _save([const, gather], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [], tmp_path / "m.onnx")
    program = edgecc.load(path)
    assert program.output_specs[0].shape == (2, 4)


def test_if_on_the_input_rank_is_inlined(tmp_path):
    """Not supported before: torch.onnx's opset-11 LocalResponseNorm guards on the input's
    rank with If(Equal(Gather(Shape(x)), 3)); a condition known at import selects the
    branch (inlined), as the Shape arithmetic stays symbolic."""
    consts = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array(0, np.int64))),
              helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2, np.int64)))]
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [*consts, helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "k"], ["b"], axis=0),
             helper.make_node("Equal", ["b", "two"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="guard", then_branch=then_g, else_branch=else_g)]
    path = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [], tmp_path / "m.onnx")
    program = edgecc.load(path, input_shapes={"x": [2, 3]})  # the check: agrees with onnxruntime
    x = torch.randn(2, 3)
    assert torch.equal(program(x)[0], torch.relu(x))
    program = edgecc.load(path, input_shapes={"x": [4, 3]})
    assert torch.equal(program(x.repeat(2, 1))[0], -x.repeat(2, 1))
