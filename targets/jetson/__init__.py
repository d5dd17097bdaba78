"""The ``jetson`` target: TensorRT-ready explicitly quantized ONNX plus engine build scripts
for a Jetson module and its JetPack; everything short of building the engine is checked
here."""
