"""Quantization passes: schemes, observers, PTQ (RTN, GPTQ, AWQ), SmoothQuant, QAT."""

from edgecc.passes.quantize.quantize import Quantize, QuantizeOptions
from edgecc.passes.quantize.scheme import SCHEMES, Scheme, TensorQuant

__all__ = ["SCHEMES", "Quantize", "QuantizeOptions", "Scheme", "TensorQuant"]
