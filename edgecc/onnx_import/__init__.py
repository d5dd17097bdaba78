"""ONNX importer: ``.onnx`` -> ``Program`` (the same torch.export ATen IR as traced models).

Our own, because onnx2torch / onnx2pytorch depend on torchvision. A model is validated first
(``validate.py``: protobuf, external data, opset, cycles, dangling inputs, and every
unsupported operator listed at once); constant subgraphs are evaluated at import so computed
weights become real parameters; the remaining graph becomes an ``nn.Module``
(``importer.py``) that ``torch.export`` traces, with ONNX's symbolic dimensions kept dynamic.

Each ONNX operator has a converter for an opset range (``converter.py`` says what a
converter is and sees); the converters live in one module per op family (``ops/``) and
``registry.py`` builds the table of them, rejecting overlapping opset ranges.

Every import checks itself (``self_check.py``): the original file runs in onnxruntime and
the program in PyTorch on fresh random inputs; a disagreement is refused with the first
node whose converter disagrees on onnxruntime's own intermediate tensors, and the check's
record (metric, value, onnxruntime version, seconds) goes into the manifest.
"""

from edgecc.onnx_import.importer import load_onnx

__all__ = ["load_onnx"]
