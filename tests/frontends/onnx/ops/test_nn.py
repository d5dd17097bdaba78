"""Converters of neural-network layers (``ops/nn.py``) against onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgecc


def ort_run(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_asymmetric_same_padding_matches_onnxruntime(auto_pad, tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=auto_pad, strides=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["m"], auto_pad=auto_pad, kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("AveragePool", ["m"], ["y"], auto_pad=auto_pad, kernel_shape=[3, 3],
                         strides=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")])
    path = str(tmp_path / "pad.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), path)
    x = torch.randn(1, 3, 10, 10)
    np.testing.assert_allclose(edgecc.load(path)(x)[0].numpy(), ort_run(path, x),
                               atol=1e-5, rtol=1e-5)
