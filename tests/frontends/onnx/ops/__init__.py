"""Tests of the ONNX converters, one module per op family (``edgecc/onnx_import/ops``)."""
