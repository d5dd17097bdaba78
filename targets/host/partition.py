"""Which nodes ``-t host`` lowers, and why not the others.

Everything goes to one LLVM library for this CPU: the host target takes the shared TVM
support table (``edgecc.targets.tvm.partition``: TVM Relax's importer plus edgecc's
converters) and legalization as they are, with no device restriction of its own. A
quantized layer is lowered in float with integer weight storage, or with
``integer_kernels=true`` as an int8 product where its format allows (see
``edgecc.targets.tvm.integer_lowering`` for which formats; the others fall back to float
with a warning naming the layer).
"""

from edgecc.targets.tvm.partition import LEGALIZATION, supports

__all__ = ["LEGALIZATION", "supports"]
