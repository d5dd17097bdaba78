"""The ``jetson`` target: TensorRT-ready explicitly quantized ONNX plus engine build scripts
for a Jetson module and its JetPack; everything short of building the engine is checked
here."""

from edgecc.targets.jetson.presets import JetsonOptions
from edgecc.targets.jetson.target import JetsonTarget

__all__ = ["JetsonOptions", "JetsonTarget"]
