"""Quantization passes: schemes, observers, PTQ (RTN, GPTQ, AWQ), SmoothQuant, QAT."""

from edgecc.passes.quantize.palettize import Palettize, PalettizeOptions
from edgecc.passes.quantize.qat import QAT, ConvertQAT, PrepareQAT, convert_qat, prepare_qat
from edgecc.passes.quantize.quantize import Quantize, QuantizeOptions, QuantSensitivity
from edgecc.passes.quantize.smooth_quant import SmoothQuant, SmoothQuantOptions
from edgecc.passes.quantize.scheme import SCHEMES, Scheme, TensorQuant

__all__ = ["Palettize", "PalettizeOptions", "QAT", "SCHEMES", "ConvertQAT", "PrepareQAT", "QuantSensitivity", "Quantize", "convert_qat", "prepare_qat", "QuantizeOptions", "Scheme", "SmoothQuant", "SmoothQuantOptions", "TensorQuant"]
