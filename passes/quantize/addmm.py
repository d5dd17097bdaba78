"""Linear layers written as ``addmm`` with a stored ``[in, out]`` weight — Hugging Face
GPT-2's ``Conv1D`` (``torch.addmm(bias, x.view(-1, in), weight)``) — made ``aten.linear``
layers before quantization looks for layers, so they are quantized (and run on the integer
kernels) like every other linear.

Before::

    %y = aten.addmm(@c_attn.bias, %x2d, @c_attn.weight)          # weight [in, out]

After::

    %y = aten.linear(%x2d, @c_attn_weight_t, @c_attn.bias)        # weight [out, in]

Lossless: ``linear(x, Cᵀ, b) = x·C + b = addmm(b, x, C)`` (the same products and sums;
float results may differ in the last bit only by summation order).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from edgecc.program import Program, op_name
from edgecc.rewrite import copy_provenance


def addmm_to_linear(program: Program) -> int:
    """Rewrite every ``addmm(b, x, C)`` (alpha = beta = 1, ``C`` a constant 2-D float
    matrix, ``b`` a constant 1-D bias or absent) into ``aten.linear``; the count rewritten."""
    count = 0
    for node in list(program.nodes("call_function")):
        if op_name(node) != "aten.addmm" or node.kwargs.get("alpha", 1) != 1 or \
                node.kwargs.get("beta", 1) != 1:
            continue
        b, x, c = node.args[:3]
        if not (program.is_constant(c) and program.is_constant(b)):
            continue
        weight, bias = program.tensor(c), program.tensor(b)
        if weight.dim() != 2 or not weight.is_floating_point() or bias.dim() != 1 or \
                bias.shape[0] != weight.shape[1]:
            continue
        w = program.add_constant(f"{c.target}_t", weight.t().contiguous(), before=node)
        w.meta.update({k: v for k, v in c.meta.items() if k != "val"})
        with program.graph.inserting_before(node):
            linear = program.graph.call_function(torch.ops.aten.linear.default, (x, w, b))
        linear.meta.update(node.meta)
        copy_provenance(linear, node)
        node.replace_all_uses_with(linear)
        program.graph.erase_node(node)
        if not c.users:
            program.graph.erase_node(c)
        count += 1
    if count:
        program.graph.lint()
        program.graph_module.recompile()
    return count
