"""smooth-quant (Xiao et al., 2023): move activation outliers into the weights before w8a8.

For the linear layers reading one input ``x``, with per-input-channel ranges
``a_k = max|x_k|`` (calibration) and ``w_k = max|W_{:,k}|`` (over the group's weights)::

    s_k = a_k^α / w_k^(1-α);     x' = x / s,   W' = W · s   →   x' W'ᵀ = x Wᵀ

Before::

    %ln = getitem(aten.native_layer_norm(%h, [384], @ln.weight, @ln.bias, 1e-12), 0)
    %q  = aten.linear(%ln, @q.weight, @q.bias)

After (the division folded into the layer norm when it feeds only these layers, else an
explicit ``aten.mul(%x, @inv_scale)``)::

    %ln = getitem(aten.native_layer_norm(%h, [384], @ln_weight_sq, @ln_bias_sq, 1e-12), 0)
    %q  = aten.linear(%ln, @q_weight, @q.bias)            # @q_weight = q.weight * s

Lossless in exact arithmetic (float rounding only); it makes the following
``quantize{scheme=w8a8}`` lossier or less lossy, which its stats report.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
import torch.fx as fx

from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import (
    check_calibration, find_layers, record_values, scale_input, select, set_weight,
    validate_calibration,
)
from edgecc.program import Program, op_name


@dataclasses.dataclass(frozen=True)
class SmoothQuantOptions:
    alpha: float = 0.5
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be in [0, 1]")


class SmoothQuant(Pass):
    """Migrate activation outliers into linear weights (exact in float)."""

    name = "smooth-quant"
    Options = SmoothQuantOptions
    lossless = True

    def validate(self, program: Program, options: SmoothQuantOptions,
                 context: PassContext) -> None:
        validate_calibration(program, context.calibration, "smooth-quant")

    def run(self, program: Program, options: SmoothQuantOptions,
            context: PassContext) -> PassResult:
        batches = check_calibration(program, context.calibration, "smooth-quant")
        layers, _ = select([la for la in find_layers(program, embeddings=False)
                            if la.kind == "linear"], options.exclude)
        groups: dict[fx.Node, list] = defaultdict(list)
        for la in layers:
            groups[la.input].append(la)
        amax: dict[fx.Node, torch.Tensor] = {}

        def on_value(node: fx.Node, value: torch.Tensor) -> None:
            m = value.detach().abs().reshape(-1, value.shape[-1]).amax(0).float()
            amax[node] = m if node not in amax else torch.maximum(amax[node], m)

        record_values(program, batches, groups, on_value, desc="smooth-quant",
                      progress=context.progress)
        folded = inserted = 0
        for value, group in groups.items():
            ws = [program.tensor(la.weight).float() for la in group]
            wmax = torch.stack([w.abs().amax(0) for w in ws]).amax(0).clamp_min(1e-5)
            s = (amax[value].clamp_min(1e-5).pow(options.alpha)
                 / wmax.pow(1 - options.alpha)).clamp_min(1e-5)
            if _fold_into_layer_norm(program, value, [la.node for la in group], s):
                folded += 1
            else:
                scale_input(program, value, [la.node for la in group], 1.0 / s,
                            f"{group[0].name}_smooth_inv_scale")
                inserted += 1
            for la, w in zip(group, ws):
                set_weight(program, la, w * s)
        program.refresh_metadata()
        program.graph_module.recompile()
        return PassResult(program, bool(groups), {
            "groups": len(groups), "alpha": options.alpha, "folded_into_norm": folded,
            "scale_nodes_inserted": inserted})


def _fold_into_layer_norm(program: Program, value: fx.Node, consumers: list[fx.Node],
                          s: torch.Tensor) -> bool:
    """Divide a layer norm's affine parameters by ``s`` if only ``consumers`` read it."""
    if op_name(value) != "getitem" or value.args[1] != 0:
        return False
    ln = value.args[0]
    if op_name(ln) != "aten.native_layer_norm" or set(value.users) != set(consumers):
        return False
    if any(u is not value and op_name(u) == "getitem" and u.args[1] == 0 for u in ln.users):
        return False
    weight, bias = ln.args[2], ln.args[3]
    if not (program.is_constant(weight) and (bias is None or program.is_constant(bias))):
        return False
    new_w = program.add_constant(f"{weight.target}_sq", program.tensor(weight) / s, before=ln)
    ln.replace_input_with(weight, new_w)
    if bias is not None:
        new_b = program.add_constant(f"{bias.target}_sq", program.tensor(bias) / s, before=ln)
        ln.replace_input_with(bias, new_b)
    return True
