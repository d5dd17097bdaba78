"""edgecc's pass library: one pass (or family) per module.

``BUILTIN_PASSES`` is the explicit list the default registry is built from; nothing
registers itself on import.
"""

from edgecc.passes.constant_fold import ConstantFold, ConstantFoldOptions
from edgecc.passes.cse import CommonSubexpressionElimination
from edgecc.passes.dce import DeadCodeElimination
from edgecc.passes.eliminate_identity import EliminateIdentity
from edgecc.passes.fold_batchnorm import FoldBatchNorm
from edgecc.passes.fuse import Fuse, FuseOptions

BUILTIN_PASSES = (
    FoldBatchNorm,
    ConstantFold,
    DeadCodeElimination,
    EliminateIdentity,
    CommonSubexpressionElimination,
    Fuse,
)

__all__ = [
    "BUILTIN_PASSES",
    "CommonSubexpressionElimination",
    "ConstantFold",
    "ConstantFoldOptions",
    "DeadCodeElimination",
    "EliminateIdentity",
    "FoldBatchNorm",
    "Fuse",
    "FuseOptions",
]
