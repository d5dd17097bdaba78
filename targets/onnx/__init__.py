"""The ``onnx`` target: a checked ``.onnx`` file, verified with onnxruntime."""

from edgecc.targets.onnx.target import OnnxOptions, OnnxTarget

__all__ = ["OnnxOptions", "OnnxTarget"]
