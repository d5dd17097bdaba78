"""edgecc's pass library: one pass (or family) per module.

``BUILTIN_PASSES`` is the explicit list the default registry is built from; nothing
registers itself on import.
"""

from edgecc.passes.attention_mask_to_additive import AttentionMaskToAdditive
from edgecc.passes.constant_fold import ConstantFold, ConstantFoldOptions
from edgecc.passes.cse import CommonSubexpressionElimination
from edgecc.passes.decompose_composites import DecomposeComposites
from edgecc.passes.dce import DeadCodeElimination
from edgecc.passes.eliminate_identity import EliminateIdentity
from edgecc.passes.fold_batchnorm import FoldBatchNorm
from edgecc.passes.fuse import Fuse, FuseOptions
from edgecc.passes.low_rank import LowRank
from edgecc.passes.distill import Distill
from edgecc.passes.prune import ApplyMasks, Prune, PruneHeads, PruneStructured, SparseFinetune
from edgecc.passes.quantize import (
    QAT, ConvertQAT, Palettize, PrepareQAT, QuantSensitivity, Quantize, QuantizeOptions,
    SmoothQuant,
)
from edgecc.passes.quantize.quantize_blockwise import QuantizeBlockwise

BUILTIN_PASSES = (
    FoldBatchNorm,
    ConstantFold,
    DeadCodeElimination,
    EliminateIdentity,
    CommonSubexpressionElimination,
    Fuse,
    AttentionMaskToAdditive,
    DecomposeComposites,
    Quantize,
    QuantizeBlockwise,
    PrepareQAT,
    ConvertQAT,
    QAT,
    SmoothQuant,
    Palettize,
    QuantSensitivity,
    PruneStructured,
    PruneHeads,
    Prune,
    ApplyMasks,
    LowRank,
    SparseFinetune,
    Distill,
)

__all__ = [
    "AttentionMaskToAdditive",
    "BUILTIN_PASSES",
    "CommonSubexpressionElimination",
    "ConstantFold",
    "ConstantFoldOptions",
    "DeadCodeElimination",
    "DecomposeComposites",
    "EliminateIdentity",
    "FoldBatchNorm",
    "Fuse",
    "FuseOptions",
    "Quantize",
    "QuantizeOptions",
]
