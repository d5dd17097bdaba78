"""ONNX importer: ``.onnx`` -> ``Program`` (the same torch.export ATen IR as traced models).

Our own, because onnx2torch / onnx2pytorch depend on torchvision. Each ONNX operator has a
converter registered with the opset range it supports (``converters.py``); a model is
validated first (``validate.py``: protobuf, external data, opset, cycles, dangling inputs,
and every unsupported operator listed at once); constant subgraphs are evaluated at import
so computed weights become real parameters; the remaining graph becomes an ``nn.Module``
(``module.py``) that ``torch.export`` traces, with ONNX's symbolic dimensions kept dynamic.
"""

from edgecc.onnx_import.importer import load_onnx

__all__ = ["load_onnx"]
