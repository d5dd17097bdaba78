"""Writing small hand-built ONNX files for the importer's tests."""

import onnx
from onnx import helper


def save_graph(nodes, inputs, outputs, inits, path, opset=13):
    """``nodes`` as one graph in an ONNX file at ``path`` (IR 8, default domain ``opset``)."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)
