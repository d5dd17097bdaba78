"""Tests of the ONNX importer (``edgecc/onnx_import``)."""
