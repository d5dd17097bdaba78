"""constant-fold: evaluate operators whose inputs are all constants, once, at compile time.

Before::

    %wt = aten.permute(@fc.weight, [1, 0])
    %s  = aten.mul(@scale, 2.0)
    %y  = aten.mm(%x, %wt)

After::

    %y = aten.mm(%x, @fc_weight_permute)      # @fc_weight_permute = fc.weight.T, computed now

A result much larger than its inputs (``expand``, ``full``, ``arange`` of a big size) is left
as an operator unless ``max_growth`` allows it, so folding never bloats the artifact.
Impure operators (random, empty) are never folded, nor are ``edgecc.dequantize`` (quantized
weights stay integer) and ``edgecc.fake_quantize`` (QAT weights stay trainable). Lossless: the folded value is exactly
what the operator computes at run time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.fx as fx

from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.program import Program, op_name
from edgecc.sparsity import is_masked
from edgecc.quant import is_dequantize, is_fake_quantize, is_palette_dequantize
from edgecc.rewrite import copy_provenance, is_pure


@dataclasses.dataclass(frozen=True)
class ConstantFoldOptions:
    # Fold only if the result's bytes <= max_growth * bytes of its constant inputs
    # (or <= min_bytes, for results created from scalars).
    max_growth: float = 1.0
    min_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.max_growth <= 0:
            raise ValueError("max_growth must be positive")


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


class ConstantFold(Pass):
    """Evaluate operators whose inputs are all constants (lossless)."""

    name = "constant-fold"
    Options = ConstantFoldOptions

    def run(self, program: Program, options: ConstantFoldOptions,
            context: PassContext) -> PassResult:
        graph = program.graph
        values: dict[fx.Node, Any] = {}
        folded = 0
        skipped_growth = 0
        for node in list(graph.nodes):
            if node.op == "get_attr":
                values[node] = program.tensor(node)
                continue
            if node.op != "call_function" or not is_pure(node):
                continue
            if (is_dequantize(node) or is_fake_quantize(node) or is_palette_dequantize(node)
                    or is_masked(node)):
                continue  # integer weights stay integer; QAT weights trainable; masks visible
            inputs = node.all_input_nodes
            if not inputs and not _creates_tensor(node):
                continue
            if any(n not in values for n in inputs):
                continue
            args = fx.node.map_arg(node.args, lambda n: values[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n])
            with torch.no_grad():
                result = node.target(*args, **kwargs)
            values[node] = result
            if not isinstance(result, torch.Tensor):
                continue  # tuples feed getitem, which folds on the next node
            in_bytes = sum(_nbytes(values[n]) for n in inputs)
            if _nbytes(result) > max(options.max_growth * in_bytes, options.min_bytes):
                skipped_growth += 1
                del values[node]
                continue
            base = "_".join([str(n.target) for n in inputs if n.op == "get_attr"][:1]
                            + [op_name(node).split(".")[-1]])
            const = program.add_constant(base, result.contiguous(), before=node)
            copy_provenance(const, node)
            node.replace_all_uses_with(const)
            values[const] = result
            folded += 1
        if folded:
            for node in reversed(list(graph.nodes)):
                if node.op in ("call_function", "get_attr") and not node.users and (
                        node.op == "get_attr" or is_pure(node)) and node in values:
                    graph.erase_node(node)
        stats = {"folded": folded}
        if skipped_growth:
            stats["skipped_too_large"] = skipped_growth
        return PassResult(program, modified=folded > 0, stats=stats)


def _creates_tensor(node: fx.Node) -> bool:
    name = op_name(node)
    return name in ("aten.full", "aten.zeros", "aten.ones", "aten.arange", "aten.scalar_tensor")
