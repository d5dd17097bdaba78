"""GGUF importer: a llama.cpp ``.gguf`` file -> ``Program`` (``edgecc.load("model.gguf")``).

``layout`` (tensor names, RoPE permutation, hyper-parameters) and ``blocks`` (ggml's
Q8_0 / Q4_0 / Q4_1 blocks) are shared with the ``-t gguf`` target, which writes the same
format; ``importer`` reads it. The ``gguf`` package is imported inside functions only.
"""

from edgecc.gguf_import.importer import GgufImportError, load_gguf

__all__ = ["GgufImportError", "load_gguf"]
