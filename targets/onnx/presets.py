"""What an ``-t onnx`` file is made for: the opsets torch.onnx's dynamo exporter writes, and
what onnxruntime — the CPU runtime that verifies the file here, and what most deployments
of it run — executes of edgecc's quantization (the quantize pass makes its result legal
here). ONNX has no device presets: one file serves every ONNX runtime.
"""

from __future__ import annotations

from edgecc.target import QuantSupport

OPSETS = range(18, 24)  # what torch.onnx's dynamo exporter writes
DEFAULT_OPSET = 20

# QDQ formats onnxruntime executes (float8 QDQ is not run by its CPU provider). Its x86
# int8 kernels (VPMADDUBSW) saturate with full-range 8-bit weights, so weights get 7
# bits here, as onnxruntime's own quantizer does with reduce_range=True.
QUANTIZATION = QuantSupport(
    weight_dtypes=frozenset({"int8", "uint8", "int4", "uint4", "float16"}),
    activation_dtypes=frozenset({"int8", "uint8", "float16"}),
    reduce_range_weights=True)
