"""Pruning passes: structured removal of channels / heads with dependency analysis,
unstructured and N:M masks (magnitude, Taylor, SNIP), and sparse fine-tuning schedules."""

from edgecc.passes.prune.sparse_training import SparseFinetune, SparseFinetuneOptions
from edgecc.passes.prune.unstructured import ApplyMasks, Prune, PruneOptions
from edgecc.passes.prune.structured import (
    PruneHeads, PruneHeadsOptions, PruneStructured, PruneStructuredOptions, find_groups,
)

__all__ = ["ApplyMasks", "SparseFinetune", "SparseFinetuneOptions", "Prune", "PruneOptions", "PruneHeads", "PruneHeadsOptions", "PruneStructured", "PruneStructuredOptions",
           "find_groups"]
