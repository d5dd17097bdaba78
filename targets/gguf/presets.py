"""What a ``-t gguf`` file is made for: llama.cpp on any CPU or GPU it builds for (one file
serves every device, so there are no device presets), and which of edgecc's weight
quantization it carries exactly (``lower.py`` has the table). Activations stay float in
the file: llama.cpp quantizes them itself, so weight-only schemes are the legal ones.
"""

from __future__ import annotations

from edgecc.target import QuantSupport

FLOAT_TYPES = ("F32", "F16")
QUANTIZATION = QuantSupport(
    weight_dtypes=frozenset({"int8", "int4", "uint4"}),
    activation_dtypes=frozenset(),
    weight_granularities=frozenset({"per-tensor", "per-channel", "per-group"}),
    dynamic_activations=False)
