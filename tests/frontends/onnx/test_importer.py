"""ONNX importer: real models round-trip, bad files fail once with a clear error."""

import logging
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import edgecc
from edgecc.errors import InputSpecError, ModelLoadError
from tests.models import mobilenet_v2, resnet20, token_inputs, transformer

logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export(module, inputs, path, dynamic_shapes=None):
    torch.onnx.export(module, inputs, dynamo=True, verbose=False,
                      dynamic_shapes=dynamic_shapes).save(str(path))
    return str(path)


def ort_run(path, inputs):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)})


@pytest.mark.parametrize("make", [resnet20, mobilenet_v2], ids=["resnet20", "mobilenet_v2"])
def test_cnn_imports_with_dynamic_batch_and_matches_onnxruntime(make, tmp_path):
    batch = torch.export.Dim("batch", min=1, max=64)
    path = export(make(), (torch.randn(2, 3, 32, 32),), tmp_path / "m.onnx", ({0: batch},))
    program = edgecc.load(path)
    assert program.input_specs[0].shape == ("batch", 3, 32, 32)
    assert program.op_counts()["aten.convolution"] > 10
    x = torch.randn(5, 3, 32, 32)
    np.testing.assert_allclose(program(x)[0].numpy(), ort_run(path, (x,))[0], atol=1e-4, rtol=1e-4)


def test_onnx_to_edgecc_to_onnx_round_trip_and_host(tmp_path):
    path = export(resnet20(), (torch.randn(2, 3, 32, 32),), tmp_path / "in.onnx")
    res = edgecc.compile(path, "onnx", output_dir=str(tmp_path / "out"))
    out_path = str(tmp_path / "out" / "model.onnx")
    x = torch.randn(2, 3, 32, 32)
    np.testing.assert_allclose(ort_run(out_path, (x,))[0], ort_run(path, (x,))[0],
                               atol=1e-4, rtol=1e-4)
    host = edgecc.compile(path, "host", output_dir=str(tmp_path / "host"))
    assert host.report["verification"]["passed"] and res.report["verification"]["passed"]
    assert host.program.op_counts()["edgecc.conv_act"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_transformer_exports_import_match_and_regain_attention(name, tmp_path):
    module = transformer(name)
    path = export(module, token_inputs(), tmp_path / "t.onnx")
    program = edgecc.load(path)
    inputs = token_inputs()
    with torch.no_grad():
        torch.testing.assert_close(program(*inputs)[0], module(*inputs), atol=1e-4, rtol=1e-4)
    res = edgecc.compile(program, "host", output_dir=str(tmp_path / "o"))
    assert res.program.op_counts()["aten.scaled_dot_product_attention"] == 2
    assert res.report["verification"]["passed"]


def test_input_shape_overrides_symbolic_dims(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=64)
    path = export(resnet20(), (torch.randn(2, 3, 32, 32),), tmp_path / "m.onnx", ({0: batch},))
    program = edgecc.load(path, input_shapes={"x": (4, 3, 32, 32)})
    assert program.input_specs[0].shape == (4, 3, 32, 32)
    with pytest.raises(InputSpecError, match="model's inputs are"):
        edgecc.load(path, input_shapes={"image": (1, 3, 32, 32)})


def test_weights_computed_in_the_graph_become_parameters(tmp_path):
    w = np.random.randn(4, 3).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["w16"], ["w32"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["w32"], ["wt"], perm=[1, 0]),
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("ConstantOfShape", ["two"], ["ones"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("MatMul", ["x", "wt"], ["y0"]),
        helper.make_node("Add", ["y0", "ones"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor("w16", TensorProto.FLOAT16, [4, 3], w.flatten().tolist()),
         helper.make_tensor("two", TensorProto.INT64, [2], [2, 4])])
    path = str(tmp_path / "c.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    program = edgecc.load(path)
    assert set(program.op_counts()) <= {"aten.matmul", "aten.mm", "aten.add"}
    weights = [program.tensor(n) for n in program.nodes("get_attr")]
    assert any(t.shape == (3, 4) and t.dtype == torch.float32 for t in weights)
    x = torch.randn(2, 3)
    np.testing.assert_allclose(program(x)[0].numpy(), ort_run(path, (x,))[0], atol=1e-3)


# -- bad input ------------------------------------------------------------------------------

def tiny(tmp_path, nodes, inputs=("x",), opset=17, initializers=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2]) for i in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def test_malformed_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\xff\xff\xff garbage not protobuf")
    with pytest.raises(ModelLoadError, match="not a valid ONNX model|no ONNX graph"):
        edgecc.load(str(bad))
    good = export(resnet20(), (torch.randn(2, 3, 32, 32),), tmp_path / "r.onnx")
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(open(good, "rb").read()[:5000])
    with pytest.raises(ModelLoadError, match="truncated"):
        edgecc.load(str(truncated))


def test_missing_external_data(tmp_path):
    m = torch.nn.Linear(256, 256)  # large enough for the exporter to move it out
    path = tmp_path / "ext.onnx"
    torch.onnx.export(m, (torch.randn(2, 256),), dynamo=True, verbose=False).save(
        str(path), external_data=True)
    assert edgecc.load(str(path)).op_counts()  # loads while the side file is there
    for f in os.listdir(tmp_path):
        if f != "ext.onnx":
            os.remove(tmp_path / f)
    with pytest.raises(ModelLoadError, match="external file.*missing"):
        edgecc.load(str(path))


def test_opset_too_new_and_too_old(tmp_path):
    from edgecc.onnx_import.validate import max_opset

    path = tiny(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], opset=max_opset() + 1)
    with pytest.raises(ModelLoadError, match="newer than the newest"):
        edgecc.load(path)
    path = tiny(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], opset=9)
    program = edgecc.load(path)  # upgraded with onnx's version converter
    assert program.op_counts()["aten.relu"] == 1


def test_cycle_and_dangling_input(tmp_path):
    cycle = [helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
             helper.make_node("Relu", ["a"], ["b"], name="n2"),
             helper.make_node("Identity", ["a"], ["y"], name="n3")]
    with pytest.raises(ModelLoadError, match="cycle"):
        edgecc.load(tiny(tmp_path, cycle))
    dangling = [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    with pytest.raises(ModelLoadError, match="'adder'.*'ghost'.*dangling"):
        edgecc.load(tiny(tmp_path, dangling))


def test_every_unsupported_operator_is_listed_once(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("NonMaxSuppression", ["a"], ["b"], name="nms1"),
             helper.make_node("Det", ["b"], ["c"], name="det1"),
             helper.make_node("Custom", ["c"], ["y"], name="cust", domain="com.vendor")]
    with pytest.raises(ModelLoadError) as info:
        edgecc.load(tiny(tmp_path, nodes))
    message = str(info.value)
    assert "3 unsupported operator type(s)" in message
    for words in ("NonMaxSuppression (nodes: nms1)", "Det (nodes: det1)", "com.vendor.Custom"):
        assert words in message


@pytest.mark.parametrize("name", ["mobilenet_v3", "efficientnet", "squeezenet", "shufflenet",
                                  "densenet", "inception", "vgg"])
def test_cnn_families_import_and_match_onnxruntime(name, tmp_path):
    from tests.cnn_zoo import make

    batch = torch.export.Dim("batch", min=1, max=16)
    path = export(make(name), (torch.randn(2, 3, 32, 32),), tmp_path / "m.onnx", ({0: batch},))
    program = edgecc.load(path)
    x = torch.randn(3, 3, 32, 32)
    np.testing.assert_allclose(program(x)[0].numpy(), ort_run(path, (x,))[0], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_vit_imports_and_matches(tmp_path):
    import transformers as tf

    torch.manual_seed(0)
    vit = tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, hidden_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, attn_implementation="sdpa")).eval()

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, pixels):
            return self.vit(pixel_values=pixels).last_hidden_state

    path = export(Hidden().eval(), (torch.randn(2, 3, 32, 32),), tmp_path / "vit.onnx")
    program = edgecc.load(path)
    x = torch.randn(2, 3, 32, 32)
    np.testing.assert_allclose(program(x)[0].numpy(), ort_run(path, (x,))[0], atol=1e-4, rtol=1e-4)
    res = edgecc.compile(program, "host", output_dir=str(tmp_path / "o"))
    assert res.program.op_counts()["aten.scaled_dot_product_attention"] == 2
    assert res.report["verification"]["passed"]
