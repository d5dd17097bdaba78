"""Quantized ONNX in and out: QDQ export by the onnx target, QDQ and QOperator import."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import edgecc
from edgecc.quant import is_dequantize, is_quantize


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 16, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = torch.nn.functional.max_pool2d(h, 2).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    batches = [(torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(i)),)
               for i in range(6)]
    return Net().eval(), batches


def ort_plain(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x.numpy()})[0]


def stored(prog):
    return [prog.tensor(n.args[0]).dtype for n in prog.nodes("call_function")
            if is_dequantize(n) and prog.is_constant(n.args[0])]


@pytest.mark.parametrize("pipeline,opset,weight_type", [
    ("quantize{scheme=w8a8}", 20, TensorProto.INT8),
    ("quantize{scheme=dynamic-int8}", 21, TensorProto.INT8),  # per-token: blocked, opset 21
    ("quantize{scheme=w4a16,group_size=16}", 21, TensorProto.UINT4),
])
def test_qdq_export_and_reimport_round_trip(net, tmp_path, pipeline, opset, weight_type):
    model, batches = net
    res = edgecc.compile(model, target="onnx", pipeline=pipeline, example_inputs=batches[0],
                         calibration=batches[:4], output_dir=str(tmp_path / "out"))
    path = str(tmp_path / "out" / "model.onnx")
    m = onnx.load(path)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == opset
    types = {i.data_type for i in m.graph.initializer if i.name.endswith("_q")}
    assert types == {weight_type}
    assert any(n.op_type == "DequantizeLinear" for n in m.graph.node)
    assert res.report["verification"]["passed"]
    # the file means exactly what the program means
    back = edgecc.load(path)
    assert len(stored(back)) == len(stored(res.program))  # weights stay integers
    for b in batches[4:]:
        ours = res.program.run(*b)[0].numpy()
        np.testing.assert_array_equal(back.run(*b)[0].numpy(), ours)
        theirs = ort_plain(path)(b[0])
        # onnxruntime may round a value within float error of a tie the other way, moving
        # single elements by one quantization step: the bound is on the fraction of elements
        # that differ at all and on the whole output's cosine
        differ = np.abs(theirs - ours) > 1e-5
        cos = (ours * theirs).sum() / np.linalg.norm(ours) / np.linalg.norm(theirs)
        assert differ.mean() <= 0.01 and cos >= 0.9999, (differ.mean(), cos)


def fp32_onnx(model, batches, tmp_path):
    edgecc.compile(model, target="onnx", pipeline="dce", example_inputs=batches[0],
                   output_dir=str(tmp_path / "fp32"), verify=False)
    return str(tmp_path / "fp32" / "model.onnx")


class Reader:
    def __init__(self, batches):
        self.items = iter([{"x": b[0].numpy()} for b in batches])

    def get_next(self):
        return next(self.items, None)


def test_onnxruntime_qdq_model_imports_exactly(net, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    model, batches = net
    out = str(tmp_path / "qdq.onnx")
    quantize_static(fp32_onnx(model, batches, tmp_path), out, Reader(batches[:4]),
                    quant_format=QuantFormat.QDQ, per_channel=True)
    prog = edgecc.load(out)
    assert sum(is_quantize(n) for n in prog.nodes("call_function")) >= 3
    assert torch.int8 in stored(prog)
    for b in batches[4:]:
        np.testing.assert_allclose(prog.run(*b)[0].numpy(), ort_plain(out)(b[0]), atol=1e-6)


def test_onnxruntime_qoperator_model_expands_to_qdq(net, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    model, batches = net
    out = str(tmp_path / "qop.onnx")
    quantize_static(fp32_onnx(model, batches, tmp_path), out, Reader(batches[:4]),
                    quant_format=QuantFormat.QOperator, per_channel=True,
                    op_types_to_quantize=["Conv"])
    assert "QLinearConv" in {n.op_type for n in onnx.load(out).graph.node}
    prog = edgecc.load(out)
    assert "aten.convolution" in prog.op_counts() and torch.int8 in stored(prog)
    for b in batches[4:]:
        ours, theirs = prog.run(*b)[0].numpy(), ort_plain(out)(b[0])
        # QLinearConv requantizes in integers: equal up to one output step
        assert np.abs(ours - theirs).max() < 0.05 * np.abs(theirs).max()


def test_dynamic_quantize_linear_and_matmul_integer(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    class MM(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(32, 16))

        def forward(self, x):
            return torch.relu(x @ self.w)

    torch.manual_seed(0)
    mm = MM().eval()
    x = torch.randn(4, 32)
    edgecc.compile(mm, target="onnx", pipeline="dce", example_inputs=(x,),
                   output_dir=str(tmp_path / "fp32"), verify=False)
    out = str(tmp_path / "dyn.onnx")
    quantize_dynamic(str(tmp_path / "fp32" / "model.onnx"), out,
                     op_types_to_quantize=["MatMul"])
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    prog = edgecc.load(out)
    for seed in range(3):
        x = torch.randn(4, 32, generator=torch.Generator().manual_seed(seed))
        # one input code rounded the other way moves an output by one step x |w|
        step = float(x.max().clamp(min=0) - x.min().clamp(max=0)) / 255
        np.testing.assert_allclose(prog.run(x)[0].numpy(), ort_plain(out)(x),
                                   atol=1e-5 + step * float(mm.w.abs().max()), rtol=1e-5)


def test_blocked_int4_and_per_axis_uint8_weights_match_the_reference(tmp_path):
    g = np.random.default_rng(0)
    w4 = g.integers(-8, 8, size=(16, 32))
    s4 = (g.random((16, 2)) * 0.1 + 0.01).astype(np.float32)
    z4 = g.integers(-2, 2, size=(16, 2))
    w8 = g.integers(0, 256, size=(16, 16)).astype(np.uint8)
    s8 = (g.random(16) * 0.05 + 0.01).astype(np.float32)
    z8 = g.integers(100, 150, size=16).astype(np.uint8)
    nodes = [
        helper.make_node("DequantizeLinear", ["w4", "s4", "z4"], ["W4"], axis=1, block_size=16),
        helper.make_node("DequantizeLinear", ["w8", "s8", "z8"], ["W8"], axis=0),
        helper.make_node("Gemm", ["x", "W4"], ["h"], transB=1),
        helper.make_node("Gemm", ["h", "W8"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 16])],
        initializer=[
            helper.make_tensor("w4", TensorProto.INT4, [16, 32], w4.flatten().tolist()),
            helper.make_tensor("s4", TensorProto.FLOAT, [16, 2], s4.flatten().tolist()),
            helper.make_tensor("z4", TensorProto.INT4, [16, 2], z4.flatten().tolist()),
            onnx.numpy_helper.from_array(w8, "w8"), onnx.numpy_helper.from_array(s8, "s8"),
            onnx.numpy_helper.from_array(z8, "z8"),
        ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    path = str(tmp_path / "int4.onnx")
    onnx.save(model, path)
    prog = edgecc.load(path)
    assert stored(prog) == [torch.uint8, torch.uint8]  # packed int4 (16x16 bytes), uint8
    assert prog.tensor([n for n in prog.nodes("call_function") if is_dequantize(n)][0]
                       .args[0]).shape == (16, 16)
    x = np.random.default_rng(1).standard_normal((3, 32)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(prog.run(torch.from_numpy(x))[0].numpy(), ref, atol=1e-4,
                               rtol=1e-5)


def test_onnxruntime_qoperator_qgemm_imports(net, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    model, batches = net
    out = str(tmp_path / "qgemm.onnx")
    quantize_static(fp32_onnx(model, batches, tmp_path), out, Reader(batches[:4]),
                    quant_format=QuantFormat.QOperator, per_channel=True)
    ops = {(n.domain, n.op_type) for n in onnx.load(out).graph.node}
    assert ("com.microsoft", "QGemm") in ops
    prog = edgecc.load(out)
    for b in batches[4:]:
        ours, theirs = prog.run(*b)[0].numpy(), ort_plain(out)(b[0])
        assert np.abs(ours - theirs).max() < 0.05 * np.abs(theirs).max()
