"""Which nodes ``-t arm64`` lowers, and why not the others.

Everything goes to one aarch64 library: the arm64 target takes the shared TVM support
table (``edgecc.targets.tvm.partition``: TVM Relax's importer plus edgecc's converters) and
legalization as they are. Quantized layers always take the integer path here: int8
linears and convolutions become int8 products on the core's best instruction (``smmla``
with +i8mm, ``sdot`` with +dotprod, a widening kernel otherwise: ``presets``); the formats
without an integer kernel (uint8 or 4-bit weights, grouped convolutions, ...) stay in
float, with a warning naming the layer and a count in the manifest's
``lowering.integer_kernels`` (``edgecc.targets.tvm.integer_lowering`` says which).
"""

from edgecc.targets.tvm.partition import LEGALIZATION, supports

__all__ = ["LEGALIZATION", "supports"]
