"""Which nodes the TVM targets lower, and why not the others: the operator table of TVM
Relax's PyTorch importer plus edgecc's own converters (``converters``, ``quant_lowering``).

Every supported node goes to the one LLVM library (TVM targets have no second device);
a node outside the table is refused with its operator named (``TvmTarget.check_lowerable``
lists every such node in one ``LoweringError`` before any work). ``LEGALIZATION`` is what
must be rewritten first for the table to hold: TVM's attention takes additive float masks
only, and its dense kernels cannot skip pruned weights (the masks are folded in).
"""

from __future__ import annotations

import functools

import torch.fx as fx

from edgecc.passes import ApplyMasks, AttentionMaskToAdditive
from edgecc.pipeline_text import PassStep
from edgecc.program import op_name
from edgecc.target import Support

LEGALIZATION = (PassStep(AttentionMaskToAdditive, AttentionMaskToAdditive.Options()),
                PassStep(ApplyMasks, ApplyMasks.Options()))


@functools.lru_cache(maxsize=1)
def supported_op_names() -> frozenset[str]:
    """``target.__name__`` of every operator the TVM importer (plus ours) converts."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    from edgecc.targets.tvm.converters import CUSTOM_CONVERTERS

    importer = ExportedProgramImporter()
    return frozenset(set(importer.create_convert_map()) | set(CUSTOM_CONVERTERS))


def supports(node: fx.Node) -> Support:
    if getattr(node.target, "__name__", "") in supported_op_names():
        return Support(True)
    return Support(False, f"TVM Relax has no converter for {op_name(node)}")
