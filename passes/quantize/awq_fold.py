"""Fold an AWQ input scale into the operator that produces the scaled value.

AWQ divides a layer group's input by ``s`` and multiplies the weights by it. Left in the
graph, the division is an extra multiply (``x * (1/s)``) that formats without a graph --
GGUF, where llama.cpp rebuilds the network from tensor names -- cannot hold. It folds
exactly (in float) into what produced ``x`` when that is

* a per-channel multiply by a constant (RMSNorm's ``weight * x_normed``)::

      Before: %x = aten.mul(@norm.weight, %h)      %y = aten.linear(%x * (1/s), @W·s)
      After:  %x = aten.mul(@norm.weight / s, %h)  %y = aten.linear(%x, @W·s)

* a product with a linear's output (the gated MLP's ``silu(gate(h)) * up(h)``): the linear's
  output rows (and bias) are divided by ``s``.

Every reader of ``x`` must be in the scaled group (otherwise another reader would see the
scaled value). ``fold_input_scale`` returns a reason when it cannot fold, and changes
nothing then.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from edgecc.program import Program, op_name

_LINEAR = ("aten.linear",)


def _constant_vector(program: Program, node: object, k: int) -> bool:
    return (isinstance(node, fx.Node) and program.is_constant(node)
            and tuple(program.tensor(node).shape) == (k,) and len(node.users) == 1)


def fold_input_scale(program: Program, value: fx.Node, readers: list[fx.Node],
                     inv_scale: torch.Tensor) -> str | None:
    """Make ``value`` come out multiplied by ``inv_scale`` (``[K]``) by changing its producer;
    None when done, else why not (nothing changed)."""
    if set(value.users) - set(readers):
        return "the scaled value has readers outside the layer group"
    if value.op != "call_function" or op_name(value) != "aten.mul" or len(value.args) != 2:
        return f"produced by {op_name(value) if value.op == 'call_function' else value.op}"
    k = inv_scale.numel()
    a, b = value.args
    for const, other in ((a, b), (b, a)):
        if _constant_vector(program, const, k):
            new = program.tensor(const).float() * inv_scale
            node = program.add_constant(f"{const.name}_awq_folded", new.to(
                program.tensor(const).dtype), before=value)
            value.replace_input_with(const, node)
            if not const.users:
                program.graph.erase_node(const)
            return None
    for lin in (a, b):
        if not (isinstance(lin, fx.Node) and lin.op == "call_function"
                and op_name(lin) in _LINEAR and len(lin.users) == 1):
            continue
        w = lin.args[1]
        bias = lin.args[2] if len(lin.args) > 2 else None
        if not (program.is_constant(w) and program.tensor(w).shape[0] == k
                and len(w.users) == 1):
            continue
        if isinstance(bias, fx.Node) and not (program.is_constant(bias)
                                              and len(bias.users) == 1):
            continue
        for old, factor in ((w, inv_scale[:, None]), (bias, inv_scale)):
            if isinstance(old, fx.Node):
                node = program.add_constant(f"{old.name}_awq_folded",
                                            program.tensor(old).float() * factor, before=lin)
                lin.replace_input_with(old, node)
                program.graph.erase_node(old)
        return None
    return "not a multiply by a constant vector or by a linear's output"
