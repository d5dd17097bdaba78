"""GGUF importer: a llama.cpp ``.gguf`` file -> ``Program`` (``edgecc.load("model.gguf")``).

``layout`` (tensor names, RoPE permutation, hyper-parameters) and ``blocks`` (ggml's
Q8_0 / Q5_0 / Q4_0 / Q4_1 blocks) are shared with the ``-t gguf`` target, which writes the
same format; ``importer`` reads it. The ``gguf`` package is imported inside functions only.

Public API (what other parts of edgecc -- ``edgecc.llm``'s decoder export -- build on)::

    load_gguf(path, seq_len=8, strict=False) -> Program
        the file traced as a ``Program`` (what ``edgecc.load("model.gguf")`` returns)
    read_gguf(path, strict=False) -> GgufModel
        the file as an untraced ``transformers`` model + its weights (``GgufWeight``: float
        value, GGUF type, codes / scales of the carried types) + metadata (``meta``: what
        ``program.graph_module.meta[PROGRAM_META]`` holds) + ``HParams``
    carry_quantization(program, weights, tied=...) -> int
        in a program traced from ``GgufModel.model`` (any wrapper of it: the decoder step),
        replace the float weights of carried tensors by ``edgecc.dequantize`` of their codes
    GgufImportError
        one-line error for a file edgecc cannot read
"""

from edgecc.gguf_import.importer import (
    CARRIED, PROGRAM_META, GgufImportError, GgufModel, GgufWeight, carry_quantization,
    load_gguf, read_gguf,
)

__all__ = ["CARRIED", "PROGRAM_META", "GgufImportError", "GgufModel", "GgufWeight",
           "carry_quantization", "load_gguf", "read_gguf"]
